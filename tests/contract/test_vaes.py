"""The VAE rule, called directly: a VAE of each latent space on a stage of each architecture,
refused where the spaces differ (by a hand-written table of which architecture works in which
space, not the rule's own lookup), located at the stage's `vae`, naming both sides."""

from __future__ import annotations

import itertools

import pytest

from contract.architectures import ARCHITECTURES
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected

SPACE_OF = {
    "sd15": "sd1",
    "sdxl": "sdxl",
    "sdxl-refiner": "sdxl",
    "flux": "flux",
    "chroma": "flux",
    "sd35": "sd3",
}
VAE_OF = {space: f"{space}-vae" for space in ("sd1", "sdxl", "flux", "sd3")}
REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            f"m-{arch}": {"architecture": arch, "source": {"folder": f"/models/{arch}"}}
            for arch in ARCHITECTURES
        },
        "vaes": {
            name: {"latent_space": space, "file": f"/vaes/{name}.safetensors"}
            for space, name in VAE_OF.items()
        },
    }
)
LIMITS = JobLimits(max_pixels=1024 * 1024)


def job(*stages: dict[str, object]) -> JobSpec:
    return JobSpec.model_validate(
        {"prompt": "a castle", "width": 256, "height": 256, "stages": list(stages)}
    )


@pytest.mark.parametrize(("arch", "space"), list(itertools.product(ARCHITECTURES, VAE_OF)))
def test_a_vae_decodes_only_its_own_latent_space(arch: str, space: str) -> None:
    # A hires stage, so that refiner-only architectures are tested too.
    spec = job(
        {"model": "m-sdxl", "steps": 2},
        {"model": f"m-{arch}", "mode": "hires", "handoff": "pixel", "vae": VAE_OF[space]},
    )
    if SPACE_OF[arch] == space:
        assert check_job(spec, REGISTRY, LIMITS).spec.stages[1].vae == VAE_OF[space]
        return
    with pytest.raises(JobRejected) as refused:
        check_job(spec, REGISTRY, LIMITS)
    (violation,) = refused.value.violations
    assert (violation.type, violation.loc) == ("vae_latent_space_mismatch", ("stages", 1, "vae"))
    assert VAE_OF[space] in violation.msg
    assert f"m-{arch}" in violation.msg
    assert f"Pick a VAE of its latent space ({SPACE_OF[arch]} VAEs here: " in violation.msg
    assert violation.ctx == {"vae_latent_space": space, "model_latent_space": SPACE_OF[arch]}


def test_an_sd15_vae_on_sdxl_is_refused_though_both_are_4_channel() -> None:
    with pytest.raises(JobRejected) as refused:
        check_job(job({"model": "m-sdxl", "vae": "sd1-vae"}), REGISTRY, LIMITS)
    (violation,) = refused.value.violations
    assert violation.type == "vae_latent_space_mismatch"
    assert "sdxl-vae" in violation.msg  # what fits


def test_each_stage_gets_the_vae_of_its_own_latent_space() -> None:
    # SD1.5 with its VAE, then a Flux hires stage with Flux's: both pass.
    spec = job(
        {"model": "m-sd15", "vae": "sd1-vae"},
        {"model": "m-flux", "mode": "hires", "handoff": "pixel", "vae": "flux-vae"},
    )
    stages = check_job(spec, REGISTRY, LIMITS).spec.stages
    assert [s.vae for s in stages] == ["sd1-vae", "flux-vae"]


def test_an_unknown_vae_lists_the_registered_ones() -> None:
    with pytest.raises(JobRejected) as refused:
        check_job(job({"model": "m-sd15", "vae": "nope"}), REGISTRY, LIMITS)
    (violation,) = refused.value.violations
    assert (violation.type, violation.loc) == ("unknown_vae", ("stages", 0, "vae"))
    assert "flux-vae, sd1-vae, sd3-vae, sdxl-vae" in violation.msg
