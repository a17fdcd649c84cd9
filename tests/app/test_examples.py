"""The worked examples in Swagger UI pass the rules as they are (or fail as they say)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.examples import JOB_EXAMPLES, LATENT_MISMATCH_RESPONSE
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected

REFUSED = {"refused_latent_mismatch"}


@pytest.mark.parametrize("name", sorted(JOB_EXAMPLES))
def test_each_example_passes_the_rules_on_the_demo_registry(name: str, registry_file: Path) -> None:
    spec = JobSpec.model_validate(JOB_EXAMPLES[name].get("value"))
    registry = ModelRegistry.load(registry_file)
    if name in REFUSED:
        with pytest.raises(JobRejected) as refusal:
            check_job(spec, registry, JobLimits())
        [violation] = refusal.value.violations
        assert violation.as_error() == LATENT_MISMATCH_RESPONSE["detail"][0]
    else:
        check_job(spec, registry, JobLimits())
