"""The embedding rule, called directly: an embedding named in a prompt goes only to a model of
its architecture, refused at the prompt that names it (the job's or the stage's own)."""

from __future__ import annotations

from typing import Any

import pytest

from contract.architectures import ARCHITECTURES
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation

TAKES_EMBEDDINGS = {"sd15", "sdxl"}  # by hand: the rows with CLIP-L (and CLIP-G) prompts
REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            f"m-{arch}": {"architecture": arch, "source": {"folder": f"/models/{arch}"}}
            for arch in ARCHITECTURES
        },
        "embeddings": {
            "sd15-style": {"architecture": "sd15", "file": "/e/sd15-style.safetensors"},
            "xl-style": {"architecture": "sdxl", "file": "/e/xl-style.safetensors"},
        },
    }
)


def check(**job: Any) -> list[Violation]:
    body = {"prompt": "a castle", "width": 256, "height": 256, **job}
    try:
        check_job(JobSpec.model_validate(body), REGISTRY, JobLimits(max_pixels=1024 * 1024))
    except JobRejected as rejected:
        return rejected.violations
    return []


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_an_sd15_embedding_goes_only_to_sd15(arch: str) -> None:
    stages = [{"model": "m-sdxl"}, {"model": f"m-{arch}", "mode": "hires",
                                    "prompt": "a castle, SD15-style"}]  # fmt: skip
    violations = [v for v in check(stages=stages) if v.type == "embedding_architecture_mismatch"]
    if arch == "sd15":
        assert violations == []
        return
    [violation] = violations
    assert violation.loc == ("stages", 1, "prompt")
    assert "the word 'sd15-style' names an embedding trained for sd15" in violation.msg
    if arch in TAKES_EMBEDDINGS:
        assert "its sdxl embeddings here: xl-style" in violation.msg
    else:
        assert f"{arch} prompts take no embeddings" in violation.msg


def test_the_jobs_prompt_is_refused_where_a_stage_reads_it_and_its_own_prompt_fixes_it() -> None:
    sd15_base = {"model": "m-sd15"}
    flux = {"model": "m-flux", "mode": "hires", "handoff": "pixel"}
    [violation] = check(prompt="a castle, sd15-style", stages=[sd15_base, flux])
    assert (violation.type, violation.loc) == ("embedding_architecture_mismatch", ("prompt",))
    assert "give stage 1 its own prompt without it" in violation.msg
    assert (
        check(prompt="a castle, sd15-style", stages=[sd15_base, {**flux, "prompt": "a castle"}])
        == []
    )


def test_a_negative_prompt_is_checked_where_the_model_reads_one() -> None:
    [violation] = check(negative_prompt="xl-style", stages=[{"model": "m-sd15"}])
    assert (violation.type, violation.loc) == (
        "embedding_architecture_mismatch",
        ("negative_prompt",),
    )
    # Flux reads no negative prompt, so no word of the job's reaches it.
    flux = {"model": "m-flux", "mode": "hires", "handoff": "pixel"}
    assert check(negative_prompt="sd15-style", stages=[{"model": "m-sd15"}, flux]) == []
