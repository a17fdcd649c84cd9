"""Loading a registered VAE on the model's own VAE config: both file layouts load the same
weights, a file that does not fit fails the job (not the worker), and VAEs share the memory
budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.envelope import FailureType
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry, VaeEntry
from contract.spec import JobSpec
from demo.vaes import build_vae
from workers.models.cache import ModelCache
from workers.stages.chain import Components, run_chain
from workers.stages.outcomes import Failed, Made, Outcome


def never_stop(stage: int, step: int, steps: int) -> str | None:
    return None


def spec_of(registry: ModelRegistry, stages: list[dict[str, Any]], **fields: Any) -> JobSpec:
    body = {"prompt": "a lighthouse", "seed": 3, "width": 64, "height": 64, **fields}
    return check_job(JobSpec.model_validate({**body, "stages": stages}), registry, JobLimits()).spec


def run(spec: JobSpec, cache: ModelCache) -> Outcome:
    return run_chain(
        spec, range(len(spec.stages)), None, cache.get, never_stop, "w", Components.of(cache)
    )


def pixels(outcome: Outcome) -> bytes:
    assert isinstance(outcome, Made), outcome
    return b"".join(im.tobytes() for im in outcome.pictures)


def test_a_file_in_ldm_layout_loads_the_same_weights_as_diffusers_layout(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    files = {
        layout: build_vae(demo_models / "demo-sdxl", tmp_path / f"{layout}.safetensors", 5, ldm)
        for layout, ldm in (("diffusers", False), ("ldm", True))
    }
    vaes = {n: VaeEntry(name=n, latent_space="sdxl", file=f) for n, f in files.items()}
    with_vaes = registry.model_copy(update={"vaes": vaes})
    cache = ModelCache(with_vaes)
    made = {
        n: pixels(run(spec_of(with_vaes, [{"model": "demo-sdxl", "steps": 2, "vae": n}]), cache))
        for n in vaes
    }
    assert made["ldm"] == made["diffusers"]


def test_a_vae_file_that_does_not_fit_fails_the_job_not_the_worker(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    # An SD3 folder's VAE declared sd1 in a registry built past the file checks: 16 channels.
    wrong = VaeEntry(name="wrong", latent_space="sd1", file=demo_models / "demo-sd35" / "vae")
    with_wrong = registry.model_copy(update={"vaes": {"wrong": wrong}})
    cache = ModelCache(with_wrong)
    outcome = run(spec_of(with_wrong, [{"model": "demo-sd15", "steps": 2, "vae": "wrong"}]), cache)
    assert isinstance(outcome, Failed)
    assert outcome.type is FailureType.MODEL_UNAVAILABLE
    assert "VAE 'wrong' could not be loaded" in outcome.message
    assert "16-channel" in outcome.message
    assert isinstance(run(spec_of(with_wrong, [{"model": "demo-sd15", "steps": 2}]), cache), Made)


def test_vaes_count_in_the_memory_budget_and_make_room_as_models_do(
    registry: ModelRegistry,
) -> None:
    cache = ModelCache(registry)
    model = cache.get("demo-sd15")
    alone = cache.resident_bytes()
    cache.vae("demo-sd15-vae", model)
    assert cache.resident_bytes() > alone  # counted
    cache.budget_bytes = cache.resident_bytes()  # room for no more
    cache.pinned = frozenset({"demo-sd15"})  # the running job's model stays
    cache.get("demo-sdxl")
    assert cache.loaded() == ["demo-sd15", "demo-sdxl"]
    assert not cache._vaes  # made room
