"""Presets: a registry name for a chain of stages (`presets:`), so that a client that sends one
model string (the OpenAI face's `model`, an A1111 checkpoint title, a job's only stage) gets the
whole chain, the article's SD1.5 → Flux hires fix among them.

A job's only stage may name a preset: it takes the preset's stages, and the fields that stage
sets itself (steps, sampler, LoRAs, …) go to the preset's first stage, over the preset's own.
A preset names no other preset, and stands alone in a job. Each preset is checked by the job
rules when the registry loads (`contract.job_rules.check_presets`: a cross-space latent handoff
stops it, naming the preset): a preset that could never run is the deployment's mistake, not
every caller's.
"""

from __future__ import annotations

from typing import TypeVar

from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation

SpecT = TypeVar("SpecT", bound=JobSpec)


def with_presets(spec: SpecT, registry: ModelRegistry) -> SpecT:
    """The spec with a preset its only stage names expanded; as it is if it names none. Raises
    JobRejected for a preset beside other stages."""
    named = [i for i, s in enumerate(spec.stages) if (s.model or "") in registry.presets]
    if not named:
        return spec
    if len(spec.stages) > 1:
        i = named[0]
        name = spec.stages[i].model or ""
        raise JobRejected([
            Violation(
                "field_not_allowed",
                ("stages", i, "model"),
                f"{name!r} is a preset: it brings its own stages "
                f"({len(registry.presets[name].stages)}), so it stands alone in a "
                "job; send it as the only stage, or name its models stage by stage",
            )
        ])  # fmt: skip
    stage = spec.stages[0]
    preset = registry.presets[stage.model or ""]
    own = {field: getattr(stage, field) for field in stage.model_fields_set - {"model"}}
    first = preset.stages[0].model_copy(update=own)
    return spec.model_copy(update={"stages": [first, *preset.stages[1:]]})
