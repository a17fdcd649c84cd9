"""The demo LoRAs are LoRAs in diffusers' layout, of the architecture they were made for, and
`make run`'s registry (deploy/registry.demo.yaml) serves one for demo-sd15 and one for demo-flux."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.safetensors_header import read_header
from contract.spec import JobSpec
from contract.violations import JobRejected
from demo.loras import build_flux_lora, build_sd15_lora
from jobs.settings import CommonSettings
from workers.models.cache import ModelCache
from workers.models.checkpoint_probe import diagnose
from workers.stages.chain import Components, run_chain
from workers.stages.outcomes import Made


def test_the_demo_loras_are_loras_in_diffusers_layout(demo_models: Path, tmp_path: Path) -> None:
    sd15 = build_sd15_lora(demo_models, tmp_path / "sd15.safetensors")
    flux = build_flux_lora(demo_models, tmp_path / "flux.safetensors")
    for lora in (sd15, flux):
        assert "is a LoRA, not a checkpoint" in (diagnose(lora) or "")
    assert all(k.startswith("unet.") for k in read_header(sd15) or {} if k != "__metadata__")
    flux_keys = [k for k in read_header(flux) or {} if k != "__metadata__"]
    assert flux_keys
    assert all(k.startswith("transformer.") for k in flux_keys)


@pytest.fixture(scope="module")
def demo_registry(demo_models: Path) -> ModelRegistry:
    """The registry `make run` serves: the settings' default, on the demo models it builds."""
    default = CommonSettings.model_fields["registry"].default
    assert default.name == "registry.demo.yaml"
    return ModelRegistry.load(default)


def spec(registry: ModelRegistry, *stages: dict[str, Any]) -> JobSpec:
    body = {"prompt": "a lighthouse", "seed": 5, "width": 64, "height": 64, "stages": stages}
    return check_job(JobSpec.model_validate(body), registry, JobLimits()).spec


def never_stop(stage: int, step: int, steps: int) -> str | None:
    return None


def test_make_run_serves_a_demo_lora_for_sd15_and_one_for_flux(
    demo_registry: ModelRegistry,
) -> None:
    loras = demo_registry.loras
    assert {name: lora.architecture for name, lora in loras.items()} == {
        "demo-sd15-lora": "sd15",
        "demo-flux-lora": "flux",
    }
    assert all(lora.file.is_file() for lora in loras.values())
    # Admission keeps each to models of its architecture.
    spec(demo_registry, {"model": "demo-sd15", "loras": [{"name": "demo-sd15-lora"}]})
    spec(demo_registry, {"model": "demo-flux", "loras": [{"name": "demo-flux-lora"}]})
    with pytest.raises(JobRejected) as refused:
        spec(demo_registry, {"model": "demo-flux", "loras": [{"name": "demo-sd15-lora"}]})
    [violation] = refused.value.violations
    assert (violation.type, violation.loc) == (
        "lora_architecture_mismatch",
        ("stages", 0, "loras", 0),
    )


def test_a_job_runs_with_each_demo_lora_and_each_changes_its_stage(
    demo_registry: ModelRegistry,
) -> None:
    cache = ModelCache(demo_registry)

    def pixels(sd15_loras: list[dict[str, Any]], flux_loras: list[dict[str, Any]]) -> bytes:
        job = spec(
            demo_registry,
            {"model": "demo-sd15", "steps": 2, "loras": sd15_loras},
            {"model": "demo-flux", "mode": "hires", "steps": 2, "loras": flux_loras},
        )
        loras = demo_registry.loras
        made = run_chain(job, range(2), None, cache.get, never_stop, "w", Components(loras=loras))
        assert isinstance(made, Made), made
        images, traces = made.pictures, made.traces
        used = [[u.name for u in t.loras] for t in traces]
        assert used == [[u["name"] for u in sd15_loras], [u["name"] for u in flux_loras]]
        return images[0].tobytes()

    plain = pixels([], [])
    sd15 = [{"name": "demo-sd15-lora", "weight": 0.8}]
    flux = [{"name": "demo-flux-lora", "weight": 0.8}]
    assert pixels(sd15, []) != plain
    assert pixels([], flux) != plain
    assert pixels(sd15, flux) not in (plain, pixels(sd15, []))
