"""Stage chains in this process on the tiny models: latents pass only inside one latent space,
pictures pass between any two, and the step monitor can stop a chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from contract.envelope import FailureType, StageTrace
from contract.job_rules import JobLimits, check_job
from contract.registry import LoraEntry, ModelRegistry
from contract.resamplers import Upscaler
from contract.spec import Handoff, JobSpec, LoraUse
from contract.violations import JobRejected, Violation
from demo.loras import build_flux_lora, build_sd15_lora
from workers.models.cache import ModelCache
from workers.stages.chain import Components, run_chain
from workers.stages.outcomes import Failed, Made, Outcome, Stopped


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def normalized(registry: ModelRegistry, stages: list[dict[str, Any]], **fields: Any) -> JobSpec:
    body = {"prompt": "a lighthouse", "seed": 3, "width": 64, "height": 64, **fields}
    return check_job(JobSpec.model_validate({**body, "stages": stages}), registry, JobLimits()).spec


def gateway_refusal(registry: ModelRegistry, spec: JobSpec) -> Violation:
    """The one violation admission finds in `spec`."""
    with pytest.raises(JobRejected) as refused:
        check_job(JobSpec.model_validate(spec.model_dump()), registry, JobLimits())
    [violation] = refused.value.violations
    return violation


def never_stop(stage: int, step: int, steps: int) -> str | None:
    return None


def made(outcome: Outcome) -> tuple[list[Image.Image], list[StageTrace]]:
    """The pictures and traces of a chain that made them."""
    assert isinstance(outcome, Made), outcome
    return outcome.pictures, outcome.traces


def chain(spec: JobSpec, cache: ModelCache, monitor: Any = never_stop) -> Outcome:
    return run_chain(spec, range(len(spec.stages)), None, cache.get, monitor, "test-worker")


def run(spec: JobSpec, cache: ModelCache) -> tuple[list[Image.Image], list[StageTrace]]:
    return made(chain(spec, cache))


def test_sd15_to_flux_hires_hands_over_pixels(registry: ModelRegistry, cache: ModelCache) -> None:
    spec = normalized(
        registry,
        [
            {"model": "demo-sd15", "steps": 2},
            {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2},
        ],
    )
    images, traces = run(spec, cache)
    assert [im.size for im in images] == [(128, 128)]
    assert [(t.input, t.width) for t in traces] == [("text", 64), ("pixels", 128)]


@pytest.mark.parametrize(
    ("first", "second"), [("demo-sd35", "demo-flux"), ("demo-flux", "demo-sd35")]
)
def test_sd35_and_flux_hand_pictures_to_each_other(
    registry: ModelRegistry, cache: ModelCache, first: str, second: str
) -> None:
    spec = normalized(
        registry,
        [{"model": first, "steps": 2}, {"model": second, "mode": "hires", "steps": 2}],
    )
    images, traces = run(spec, cache)
    assert [im.size for im in images] == [(128, 128)]
    assert [t.input for t in traces] == ["text", "pixels"]


def test_sdxl_refiner_continues_the_base_latents(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = normalized(
        registry,
        [{"model": "demo-sdxl", "steps": 4}, {"model": "demo-sdxl-refiner", "mode": "refine"}],
    )
    _, traces = run(spec, cache)
    refine = traces[1]
    assert (refine.input, refine.input_latent_space) == ("latents", "sdxl")
    assert refine.input_shape == [1, 4, 8, 8]


def test_flux_latent_hires_unpacks_and_interpolates(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = normalized(
        registry,
        [
            {"model": "demo-flux", "steps": 2},
            {"model": "demo-flux", "mode": "hires", "handoff": "latent", "steps": 2},
        ],
    )
    images, traces = run(spec, cache)
    assert images[0].size == (128, 128)
    assert traces[1].input_shape == [1, 16, 8, 8]  # unpacked: channels x latent height x width


def test_each_of_a1111s_latent_upscale_modes_is_its_own(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    def hires(upscaler: str, scale: float = 2.0) -> bytes:
        base = {"model": "demo-sd15", "steps": 2}
        second = {"model": "demo-sd15", "mode": "hires", "handoff": "latent", "steps": 2,
                  "upscaler": upscaler, "scale": scale}  # fmt: skip
        images, _ = run(normalized(registry, [base, second]), cache)
        return images[0].tobytes()

    # nearest and nearest-exact pick other latents at a scale that is not whole
    assert hires("latent-nearest", 1.5) != hires("latent-nearest-exact", 1.5)
    # torch's antialiased interpolation is a kernel of its own (it differs, barely, enlarging)
    assert hires("latent-bilinear-antialiased") != hires("latent-bilinear")
    assert hires("latent-bicubic-antialiased") != hires("latent-bilinear-antialiased")


@pytest.mark.parametrize("source", ["demo-sd15", "demo-sd35"])
def test_the_worker_refuses_latents_of_another_space_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache, source: str
) -> None:
    # SD3.5's latents have Flux's 16 channels: the worker must still refuse them.
    valid = normalized(
        registry,
        [{"model": source, "steps": 2}, {"model": "demo-flux", "mode": "hires", "steps": 2}],
    )
    # The same job with its handoff switched to latent, as if it reached Redis by another path.
    smuggled = valid.model_copy(
        update={
            "stages": [
                valid.stages[0],
                valid.stages[1].model_copy(
                    update={"handoff": Handoff.LATENT, "upscaler": Upscaler.LATENT_BILINEAR}
                ),
            ]
        }
    )
    # in the words the gateway refuses the same job with
    refusal = gateway_refusal(registry, smuggled).msg
    assert chain(smuggled, cache) == Failed(FailureType.LATENT_SPACE_MISMATCH, refusal)


def test_the_monitor_stops_a_chain_at_a_step(registry: ModelRegistry, cache: ModelCache) -> None:
    spec = normalized(registry, [{"model": "demo-sd15", "steps": 10}])
    seen: list[int] = []

    def cancel_at_3(stage: int, step: int, steps: int) -> str | None:
        seen.append(step)
        return "canceled" if step == 3 else None

    assert chain(spec, cache, cancel_at_3) == Stopped("canceled")
    assert seen == [1, 2, 3]


def test_a_stage_runs_with_the_sampler_it_names_and_the_model_keeps_its_own(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    def pixels(stage: dict[str, Any]) -> tuple[bytes, str]:
        images, traces = run(
            normalized(registry, [{"model": "demo-sd15", "steps": 4, **stage}]), cache
        )
        return images[0].tobytes(), traces[0].sampler

    own, own_name = pixels({})
    karras, karras_name = pixels({"sampler": "dpm++ 2m", "scheduler": "Karras"})
    ancestral, ancestral_name = pixels({"sampler": "Euler a"})
    assert (own_name, karras_name, ancestral_name) == ("Euler", "DPM++ 2M", "Euler a")
    assert len({own, karras, ancestral}) == 3  # each sampler draws its own picture
    assert pixels({}) == (own, "Euler")  # the model's own scheduler is back, to the byte
    assert pixels({"sampler": "Euler a"})[0] == ancestral  # seeded: the same again
    # A1111's schedule names: spacings of the model's own timesteps
    spaced = {pixels({"sampler": "Euler", "scheduler": s})[0] for s in ("normal", "sgm_uniform")}
    assert len(spaced) == 2
    assert pixels({}) == (own, "Euler")


def test_flux_stages_take_the_flow_matching_euler(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = normalized(registry, [{"model": "demo-flux", "steps": 2, "sampler": "euler"}])
    _, [trace] = run(spec, cache)
    assert trace.sampler == "Euler"


def test_a_healthy_model_is_not_decoded_twice(registry: ModelRegistry, cache: ModelCache) -> None:
    _, [trace] = run(normalized(registry, [{"model": "demo-sd15", "steps": 2}]), cache)
    assert not trace.decoded_again_in_fp32


def test_a_lora_changes_the_picture_weight_0_does_not_and_nothing_leaks(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    lora = build_sd15_lora(demo_models, tmp_path / "detail.safetensors")
    loras = {"detail": LoraEntry(name="detail", architecture="sd15", file=lora)}
    with_lora = registry.model_copy(update={"loras": loras})
    cache = ModelCache(registry)

    def pixels(uses: list[dict[str, Any]]) -> bytes:
        spec = normalized(with_lora, [{"model": "demo-sd15", "steps": 2, "loras": uses}])
        images, _ = made(
            run_chain(spec, range(1), None, cache.get, never_stop, "w", Components(loras=loras))
        )
        return images[0].tobytes()

    before = pixels([])
    assert pixels([{"name": "detail", "weight": 1.0}]) != before
    assert pixels([{"name": "detail", "weight": 0.0}]) == before  # weight 0 is no LoRA
    assert pixels([]) == before  # the next job sees the base weights, to the byte


def test_the_worker_refuses_a_lora_of_another_architecture_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache, tmp_path: Path
) -> None:
    loras = {"sd15-only": LoraEntry(name="sd15-only", architecture="sd15", file=tmp_path / "x")}
    spec = normalized(registry, [{"model": "demo-sdxl", "steps": 2}])
    smuggled = spec.model_copy(
        update={
            "stages": [spec.stages[0].model_copy(update={"loras": [LoraUse(name="sd15-only")]})]
        }
    )
    refused = run_chain(
        smuggled, range(1), None, cache.get, never_stop, "w", Components(loras=loras)
    )
    # in the words the gateway refuses the same job with
    with_loras = registry.model_copy(update={"loras": loras})
    assert refused == Failed(FailureType.INVALID_JOB, gateway_refusal(with_loras, smuggled).msg)
    assert "was trained for sd15, but stage 0's model 'demo-sdxl' is sdxl" in refused.message


def test_sd15_to_flux_hires_through_an_upscaler_model(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    stages = [
        {"model": "demo-sd15", "steps": 2},
        {"model": "demo-flux", "mode": "hires", "steps": 2, "scale": 1.5, "upscaler": "esrgan-4x"},
    ]
    spec = normalized(registry, stages)
    images, traces = made(
        run_chain(
            spec, range(2), None, cache.get, never_stop, "w", Components(upscaler=cache.upscaler)
        )
    )
    # ESRGAN makes 256x256 of the 64x64 picture; the stage asked for 1.5x: 96x96, exactly.
    assert [im.size for im in images] == [(96, 96)]
    assert [t.upscaler for t in traces] == [None, "esrgan-4x"]
    # Another upscaler hands Flux another picture.
    lanczos = normalized(registry, [stages[0], {**stages[1], "upscaler": "lanczos"}])
    other, _ = made(
        run_chain(
            lanczos, range(2), None, cache.get, never_stop, "w", Components(upscaler=cache.upscaler)
        )
    )
    assert other[0].tobytes() != images[0].tobytes()


def test_the_worker_refuses_an_upscaler_model_on_latents_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = normalized(
        registry,
        [
            {"model": "demo-sdxl", "steps": 2},
            {"model": "demo-sdxl", "mode": "hires", "handoff": "latent", "steps": 2},
        ],
    )
    hires = spec.stages[1].model_copy(update={"upscaler": "esrgan-4x"})
    smuggled = spec.model_copy(update={"stages": [spec.stages[0], hires]})
    refused = run_chain(
        smuggled, range(2), None, cache.get, never_stop, "w", Components(upscaler=cache.upscaler)
    )
    assert refused == Failed(FailureType.INVALID_JOB, gateway_refusal(registry, smuggled).msg)
    assert "'esrgan-4x' is a model that upscales pictures" in refused.message


def test_lora_adapters_live_under_the_memory_budget_least_recently_used_first(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    files = {
        n: build_sd15_lora(demo_models, tmp_path / f"{n}.safetensors", seed=s)
        for n, s in (("a", 1), ("b", 2))
    }
    loras = {n: LoraEntry(name=n, architecture="sd15", file=f) for n, f in files.items()}
    with_loras = registry.model_copy(update={"loras": loras})

    def pixels(cache: ModelCache, *names: str) -> bytes:
        uses = [{"name": n} for n in names]
        spec = normalized(with_loras, [{"model": "demo-sd15", "steps": 2, "loras": uses}])
        images, _ = made(
            run_chain(spec, range(1), None, cache.get, never_stop, "w", Components(loras=loras))
        )
        return images[0].tobytes()

    cache = ModelCache(registry)
    base = cache.get("demo-sd15").param_bytes
    pixels(cache, "a")
    adapter = cache.resident_bytes() - base
    assert adapter > 0  # the adapter's weights are counted
    cache.budget_bytes = base + adapter + adapter // 2  # the model and one adapter
    with_b = pixels(cache, "b")
    model = cache.get("demo-sd15")
    assert set(model.adapters) == {"b"}  # "a" was least recently used
    assert cache.resident_bytes() == base + adapter
    # What remains draws as it would have had "a" never been loaded.
    assert with_b == pixels(ModelCache(registry), "b")
    # A stage that needs both gets both, over the budget rather than without one.
    pixels(cache, "a", "b")
    assert set(model.adapters) == {"a", "b"}


def test_an_sd15_lora_on_the_base_and_a_flux_lora_on_its_flux_hires_stage(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    loras = {
        "sd-detail": LoraEntry(
            name="sd-detail",
            architecture="sd15",
            file=build_sd15_lora(demo_models, tmp_path / "sd.safetensors"),
        ),
        "flux-style": LoraEntry(
            name="flux-style",
            architecture="flux",
            file=build_flux_lora(demo_models, tmp_path / "flux.safetensors"),
        ),
    }
    with_loras = registry.model_copy(update={"loras": loras})
    cache = ModelCache(registry)

    def job(flux_loras: list[dict[str, Any]]) -> tuple[bytes, list[Any]]:
        stages = [
            {"model": "demo-sd15", "steps": 2, "loras": [{"name": "sd-detail"}]},
            {"model": "demo-flux", "mode": "hires", "steps": 2, "loras": flux_loras},
        ]
        spec = normalized(with_loras, stages)
        images, traces = made(
            run_chain(spec, range(2), None, cache.get, never_stop, "w", Components(loras=loras))
        )
        return images[0].tobytes(), traces

    styled, traces = job([{"name": "flux-style", "weight": 0.9}])
    assert [[u.name for u in t.loras] for t in traces] == [["sd-detail"], ["flux-style"]]
    plain, _ = job([])
    assert styled != plain  # the Flux LoRA acts on the Flux stage
    assert job([{"name": "flux-style", "weight": 0.9}])[0] == styled


@pytest.mark.parametrize("model", ["demo-sd15", "demo-sdxl", "demo-sd35"])
def test_clip_skip_changes_the_picture_1_equals_none_and_the_next_job_is_untouched(
    registry: ModelRegistry, cache: ModelCache, model: str
) -> None:
    def pixels(**stage: Any) -> bytes:
        images, traces = run(normalized(registry, [{"model": model, "steps": 2, **stage}]), cache)
        skipped = stage.get("clip_skip", 1)
        assert traces[0].clip_skip == (None if skipped == 1 else skipped)
        return images[0].tobytes()

    before = pixels()
    assert pixels(clip_skip=1) == before  # A1111's 1 is the last layer: no clip skip at all
    assert pixels(clip_skip=2) != before  # the layer before it reads the prompt otherwise
    assert pixels() == before  # the next job reads the last layer again, to the byte


def test_a_clip_skip_deeper_than_the_encoder_fails_the_job_with_how_deep_it_can_go(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = normalized(registry, [{"model": "demo-sd15", "steps": 2, "clip_skip": 5}])
    failed = chain(spec, cache)
    assert failed == Failed(
        FailureType.INVALID_JOB,
        "stage 0 asks for clip_skip 5, but 'demo-sd15''s CLIP text encoder has 2 layers; ask for "
        "at most 2",
    )


def test_the_worker_refuses_clip_skip_on_flux_whatever_the_gateway_said(
    registry: ModelRegistry, cache: ModelCache
) -> None:
    spec = normalized(registry, [{"model": "demo-flux", "steps": 2}])
    smuggled = spec.model_copy(
        update={"stages": [spec.stages[0].model_copy(update={"clip_skip": 2})]}
    )
    refusal = gateway_refusal(registry, smuggled)
    assert refusal.type == "clip_skip_unsupported"
    assert chain(smuggled, cache) == Failed(FailureType.INVALID_JOB, refusal.msg)
