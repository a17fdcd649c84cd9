"""The chain rules, called directly: every ordered pair of architectures x handoff x mode, and
the defaults and sizes a normalized spec gets.

The expectation is derived independently of `contract.job_rules`: from the latent-space column
of the architecture table and the documented rules, plus a hand-written table of the pairs the
service exists for, so a wrong row in either place fails here. (`tests/app/routes/test_jobs.py`
checks that a refusal reaches the client as a 422 and queues nothing.)
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from contract import job_rules
from contract.architectures import ARCHITECTURES
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation
from tests.helpers import png_b64

MODEL_OF = {arch: f"demo-{arch}" for arch in ARCHITECTURES}
REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            **{
                name: {"architecture": arch, "source": {"folder": f"/models/{name}"}}
                for arch, name in MODEL_OF.items()
            },
            "other-pool-sdxl-refiner": {
                "architecture": "sdxl-refiner",
                "source": {"folder": "/models/r"},
                "pool": "elsewhere",
            },
        }
    }
)
LIMITS = JobLimits(max_pixels=1024 * 1024)


def rejected(spec: dict[str, Any]) -> list[Violation]:
    with pytest.raises(JobRejected) as refusal:
        check_job(JobSpec.model_validate(spec), REGISTRY, LIMITS)
    return refusal.value.violations


# Latent handoffs that must be accepted, by hand (all others between these are refused). Flux and
# Chroma are two architectures on one latent space (Flux's VAE): the rule follows the space.
LATENT_COMPATIBLE = {
    ("sd15", "sd15"),
    ("sdxl", "sdxl"),
    ("sdxl", "sdxl-refiner"),
    ("sdxl-refiner", "sdxl"),
    ("sdxl-refiner", "sdxl-refiner"),
    ("flux", "flux"),
    ("flux", "chroma"),
    ("chroma", "flux"),
    ("chroma", "chroma"),
    ("sd35", "sd35"),
}
MID_SCHEDULE = {"sdxl", "sdxl-refiner"}

CASES = list(
    itertools.product(ARCHITECTURES, ARCHITECTURES, ("latent", "pixel"), ("refine", "hires"))
)


def expected_errors(source: str, target: str, handoff: str, mode: str) -> set[tuple[str, str]]:
    expected = set()
    same_space = ARCHITECTURES[source].latent_space == ARCHITECTURES[target].latent_space
    assert same_space == ((source, target) in LATENT_COMPATIBLE), "table and rule disagree"
    if handoff == "latent" and not same_space:
        expected.add(("latent_space_mismatch", "handoff"))
    if mode == "refine" and handoff == "pixel":
        expected.add(("refine_needs_latent_handoff", "handoff"))
    if mode == "refine" and not {source, target} <= MID_SCHEDULE:
        expected.add(("refine_unsupported", "mode"))
    return expected


def two_stage_spec(source: str, target: str, handoff: str, mode: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "prompt": "a lighthouse",
        "width": 256,
        "height": 256,
        "stages": [
            {"model": MODEL_OF[source], "steps": 4},
            {"model": MODEL_OF[target], "mode": mode, "handoff": handoff, "steps": 4},
        ],
    }
    if mode == "hires":
        spec["stages"][1]["upscaler"] = "latent-bilinear" if handoff == "latent" else "lanczos"
        spec["stages"][1]["scale"] = 2
    if not ARCHITECTURES[source].text_to_image:
        spec["init_image"] = png_b64(64, 64)  # a refiner can only start from a picture
    return spec


@pytest.mark.parametrize(("source", "target", "handoff", "mode"), CASES)
def test_handoff_rule(source: str, target: str, handoff: str, mode: str) -> None:
    spec = two_stage_spec(source, target, handoff, mode)
    expected = expected_errors(source, target, handoff, mode)
    if not expected:
        checked = check_job(JobSpec.model_validate(spec), REGISTRY, LIMITS)
        assert checked.spec.stages[1].handoff == handoff
        return
    violations = rejected(spec)
    assert {(v.type, v.loc[-1]) for v in violations} == expected
    assert all(v.loc[:2] == ("stages", 1) for v in violations)


def test_mismatch_error_names_both_models_spaces_and_fix() -> None:
    [error] = rejected(two_stage_spec("sd15", "flux", "latent", "hires"))
    assert error.type == "latent_space_mismatch"
    assert error.loc == ("stages", 1, "handoff")
    for needle in (
        "demo-sd15",
        "demo-flux",
        "sd1 (4 channels)",
        "flux (16 channels",
        "handoff: pixel",
    ):
        assert needle in error.msg
    assert error.ctx["from_latent_space"]["name"] == "sd1"
    assert error.ctx["to_latent_space"]["channels"] == 16


def test_sd15_to_sdxl_is_refused_although_both_are_4_channel() -> None:
    [error] = rejected(two_stage_spec("sd15", "sdxl-refiner", "latent", "hires"))
    ctx = error.ctx
    assert ctx["from_latent_space"]["channels"] == ctx["to_latent_space"]["channels"] == 4
    assert ctx["from_latent_space"]["scaling_factor"] != ctx["to_latent_space"]["scaling_factor"]


def test_latents_never_cross_worker_pools() -> None:
    spec = two_stage_spec("sdxl", "sdxl-refiner", "latent", "refine")
    spec["stages"][1]["model"] = "other-pool-sdxl-refiner"
    [error] = rejected(spec)
    assert error.type == "handoff_across_pools"


def test_a_normalized_spec_has_its_seed_defaults_and_sizes() -> None:
    checked = check_job(
        JobSpec.model_validate(two_stage_spec("sd15", "flux", "pixel", "hires")), REGISTRY, LIMITS
    )
    spec = checked.spec
    assert spec.seed is not None
    assert spec.timeout_s == LIMITS.default_timeout_s
    base, hires = spec.stages
    assert (base.guidance_scale, hires.guidance_scale) == (7.0, 3.5)  # per architecture
    assert (hires.width, hires.height, hires.denoise) == (512, 512, 0.5)
    assert checked.init_image is None


def test_every_broken_rule_is_reported_at_once() -> None:
    spec = two_stage_spec("sd15", "flux", "latent", "hires")
    spec["negative_prompt"] = "blurry"
    spec["width"] = 250
    types = {v.type for v in rejected(spec)}
    assert {"latent_space_mismatch", "size_not_multiple"} <= types


def test_a_computed_size_must_fit_the_schema_the_envelope_is_served_with() -> None:
    # 2048 x 64 at scale 2.5 is 5120 x 160: within the pixel budget, over the 4096 px side limit.
    spec = {
        "prompt": "p",
        "width": 2048,
        "height": 64,
        "stages": [{"model": "demo-sd15"}, {"model": "demo-sd15", "mode": "hires", "scale": 2.5}],
    }
    [error] = rejected(spec)
    assert error.type == "computed_value_out_of_range"
    assert error.loc == ("stages", 1, "scale")
    assert "5120" in error.msg


@pytest.mark.parametrize(
    ("stages", "strength", "where", "least"),
    [
        # A hires stage re-runs int(steps × denoise) steps; img2img int(steps × strength).
        ([{"steps": 4}, {"mode": "hires", "steps": 3, "denoise": 0.3}], None, 1, 4),
        ([{"steps": 4}, {"mode": "hires", "steps": 1}], None, 1, 2),
        ([{"steps": 2}], 0.4, 0, 3),
    ],
)
def test_a_stage_that_would_run_no_denoising_step_is_refused(
    stages: list[dict[str, Any]], strength: float | None, where: int, least: int
) -> None:
    """Found by a hostile pass: admitted, then failed in the model with "cannot reshape tensor
    of 0 elements"."""
    spec: dict[str, Any] = {"prompt": "p", "width": 64, "height": 64}
    spec["stages"] = [{**s, "model": MODEL_OF["sd15"]} for s in stages]
    if strength is not None:
        spec |= {"init_image": png_b64(64, 64), "strength": strength}
    [violation] = rejected(spec)
    assert (violation.type, violation.loc) == ("too_few_steps", ("stages", where, "steps"))
    assert violation.ctx["min_steps"] == least
    assert f"at least {least} steps" in violation.msg
    # One more step and it is admitted.
    spec["stages"][where]["steps"] = least
    check_job(JobSpec.model_validate(spec), REGISTRY, LIMITS)


@pytest.mark.parametrize(
    ("stages", "strength", "at"),
    [
        ([{"steps": 2}], 5e-324, ("strength",)),  # 1 / 5e-324 is infinite
        (
            [{"steps": 4}, {"mode": "hires", "steps": 3, "denoise": 1e-300}],
            None,
            ("stages", 1, "denoise"),
        ),
    ],
)
def test_a_share_no_step_count_can_make_up_for_is_the_field_to_raise(
    stages: list[dict[str, Any]], strength: float | None, at: tuple[str | int, ...]
) -> None:
    """Found by the fuzzer: `strength: 5e-324` answered 500 (the least step count overflowed)."""
    spec: dict[str, Any] = {"prompt": "p", "width": 64, "height": 64}
    spec["stages"] = [{**s, "model": MODEL_OF["sd15"]} for s in stages]
    if strength is not None:
        spec |= {"init_image": png_b64(64, 64), "strength": strength}
    [violation] = rejected(spec)
    assert (violation.type, violation.loc) == ("too_few_steps", at)
    assert violation.ctx["min_steps"] is None
    assert f"raise {at[-1]} to at least" in violation.msg


def test_sd35_and_flux_share_a_channel_count_but_not_a_latent_space() -> None:
    # 16 channels each, so shapes would even match: the rule is the VAE, not the tensor shape.
    assert (
        ARCHITECTURES["sd35"].latent_space.channels == ARCHITECTURES["flux"].latent_space.channels
    )
    for source, target in (("sd35", "flux"), ("flux", "sd35")):
        [violation] = rejected(two_stage_spec(source, target, "latent", "hires"))
        assert violation.type == "latent_space_mismatch"
        assert "latent space sd3 (16 channels)" in violation.msg
        check_job(
            JobSpec.model_validate(two_stage_spec(source, target, "pixel", "hires")),
            REGISTRY,
            LIMITS,
        )


def test_flux_schnell_defaults_to_four_steps_and_no_guidance() -> None:
    registry = ModelRegistry.model_validate(
        {
            "models": {
                "schnell": {
                    "architecture": "flux",
                    "variant": "schnell",
                    "source": {"folder": "/m"},
                }
            }
        }
    )
    body = {"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "schnell"}]}
    [stage] = check_job(JobSpec.model_validate(body), registry, LIMITS).spec.stages
    assert (stage.steps, stage.guidance_scale) == (4, 0.0)
    with pytest.raises(ValueError, match="'x' is sd35, which has no variants"):
        ModelRegistry.model_validate(
            {
                "models": {
                    "x": {"architecture": "sd35", "variant": "dev", "source": {"folder": "/m"}}
                }
            }
        )
    with pytest.raises(ValueError, match="'y' is sd15, which has the variants inpainting, not"):
        ModelRegistry.model_validate(
            {
                "models": {
                    "y": {"architecture": "sd15", "variant": "dev", "source": {"folder": "/m"}}
                }
            }
        )


# Clip skip: the hand-written list of architectures whose prompt is read from CLIP layers.
READS_CLIP_LAYERS = {"sd15", "sdxl", "sdxl-refiner", "sd35"}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_clip_skip_only_where_the_prompt_is_read_from_clip_layers(arch: str) -> None:
    first = {"model": MODEL_OF["sd15"], "steps": 4}
    stage = {"model": MODEL_OF[arch], "mode": "hires", "handoff": "pixel", "steps": 4,
             "clip_skip": 2}  # fmt: skip
    body = {"prompt": "p", "width": 512, "height": 512, "stages": [first, stage]}
    if arch in READS_CLIP_LAYERS:
        checked = check_job(JobSpec.model_validate(body), REGISTRY, LIMITS).spec
        assert checked.stages[1].clip_skip == 2
        return
    [violation] = rejected(body)
    assert (violation.type, violation.loc) == ("clip_skip_unsupported", ("stages", 1, "clip_skip"))
    assert "remove clip_skip from this stage" in violation.msg


def test_clip_skip_1_is_the_last_layer_so_the_checked_spec_drops_it() -> None:
    body = {"prompt": "p", "width": 512, "height": 512,
            "stages": [{"model": MODEL_OF["sd15"], "steps": 4, "clip_skip": 1}]}  # fmt: skip
    assert (
        check_job(JobSpec.model_validate(body), REGISTRY, LIMITS).spec.stages[0].clip_skip is None
    )


def test_pictures_are_decoded_only_once_every_cheap_check_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Decoding is the one check that costs real CPU: a job that breaks a cheap rule is refused
    # without it (a hostile pass made the gateway decode before refusing on steps).
    decoded: list[str] = []
    real = job_rules.decode_init_image

    def counting(data: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(data)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(job_rules, "decode_init_image", counting)
    spec = {
        "prompt": "p", "width": 512, "height": 512, "init_image": png_b64(512, 512),
        "stages": [{"model": MODEL_OF["sd15"], "steps": 20}],
    }  # fmt: skip
    [violation] = rejected({**spec, "timeout_s": 80_000})
    assert violation.type == "timeout_over_limit"
    [violation] = rejected({**spec, "stages": [{"model": MODEL_OF["sd15"], "sampler": "nope"}]})
    assert violation.type == "unknown_sampler"
    with pytest.raises(JobRejected) as costly:
        check_job(
            JobSpec.model_validate(spec), REGISTRY, JobLimits(1024 * 1024, max_megapixel_steps=1)
        )
    assert costly.value.violations[0].type == "job_too_costly"
    assert decoded == []
    checked = check_job(JobSpec.model_validate(spec), REGISTRY, LIMITS)
    assert checked.init_image is not None
    assert len(decoded) == 1
