"""Presets: a job's only stage naming one takes its stages (its own fields over the first
one's); a preset stands alone; the registry refuses a preset the job rules refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.job_rules import JobLimits, check_job, load_registry
from contract.presets import with_presets
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected

MODELS = {
    f"m-{arch}": {"architecture": arch, "source": {"folder": f"/models/{arch}"}}
    for arch in ("sd15", "sdxl", "flux")
}
HIRES = {"name": "sd15-flux", "stages": [
    {"model": "m-sd15", "steps": 20},
    {"model": "m-flux", "mode": "hires", "handoff": "pixel", "denoise": 0.4},
]}  # fmt: skip
REGISTRY = ModelRegistry.model_validate({"models": MODELS, "presets": {"sd15-flux": HIRES}})


def spec(*stages: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate({"prompt": "p", "width": 64, "height": 64, "stages": stages})


def test_the_only_stage_naming_a_preset_takes_its_stages_and_keeps_its_own_fields() -> None:
    expanded = with_presets(spec({"model": "sd15-flux", "steps": 4, "sampler": "Euler a"}),
                            REGISTRY)  # fmt: skip
    base, hires = expanded.stages
    assert (base.model, base.steps, base.sampler) == ("m-sd15", 4, "Euler a")
    assert (hires.model, hires.denoise) == ("m-flux", 0.4)
    plain = spec({"model": "m-sd15"})
    assert with_presets(plain, REGISTRY) is plain


def test_a_checked_preset_job_is_the_chain_it_names() -> None:
    checked = check_job(spec({"model": "sd15-flux"}), REGISTRY, JobLimits()).spec
    assert [s.model for s in checked.stages] == ["m-sd15", "m-flux"]
    assert checked.size_of(1) == (128, 128)  # the hires stage's default scale, 2


def test_a_preset_stands_alone() -> None:
    with pytest.raises(JobRejected) as rejected:
        check_job(spec({"model": "sd15-flux"}, {"model": "m-sdxl", "mode": "hires"}), REGISTRY,
                  JobLimits())  # fmt: skip
    [violation] = rejected.value.violations
    assert (violation.type, violation.loc) == ("field_not_allowed", ("stages", 0, "model"))
    assert "it brings its own stages (2)" in violation.msg


def load(tmp_path: Path, presets: dict[str, Any]) -> ModelRegistry:
    file = tmp_path / "registry.yaml"
    file.write_text(yaml.safe_dump({"models": MODELS, "presets": presets}))
    return load_registry(file)


def test_the_registry_refuses_a_preset_the_job_rules_refuse(tmp_path: Path) -> None:
    assert list(load(tmp_path, {"sd15-flux": HIRES}).presets) == ["sd15-flux"]
    latent = {"stages": [{"model": "m-sd15"},
                         {"model": "m-sdxl", "mode": "hires", "handoff": "latent"}]}  # fmt: skip
    with pytest.raises(ValueError, match=r"preset 'across' cannot run: stages\.1\.handoff: "):
        load(tmp_path, {"across": latent})
    with pytest.raises(ValueError, match=r"presets \['m-sd15'\] have the names of models"):
        load(tmp_path, {"m-sd15": HIRES})


def test_a_preset_names_models_not_presets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset 'outer' names the preset 'sd15-flux'"):
        load(tmp_path, {"sd15-flux": HIRES, "outer": {"stages": [{"model": "sd15-flux"}]}})
