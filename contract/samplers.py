"""Samplers as users name them (A1111's names), per architecture, and the diffusers scheduler
each one is.

A stage picks a `sampler` (default: the scheduler the model ships with) and a `scheduler`, the
sigma schedule A1111 calls "Schedule type" (`automatic` keeps the sampler's own). Flow-matching
models (Flux, SD3.5, Chroma: their row says so) take only their flow-matching Euler. The gateway
checks the names at admission and the worker builds the scheduler from the model's own scheduler
config, so the training settings (betas, timestep spacing, Flux's shift) carry over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.architectures import ARCHITECTURES, ArchitectureName
from contract.registry import ModelEntry
from contract.spec import Stage
from contract.violations import Violation

AUTOMATIC = "automatic"
# A1111's schedule names (`scheduler` in its API) -> the label its PNG text writes.
SCHEDULE_LABELS = {AUTOMATIC: "Automatic", "karras": "Karras", "exponential": "Exponential"}
_SIGMA_OPTION = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas"}
_SHAPED = frozenset(_SIGMA_OPTION)


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str  # a diffusers scheduler
    options: dict[str, Any] = field(default_factory=dict)
    schedules: frozenset[str] = frozenset()  # beyond `automatic`

    def scheduler_options(self, schedule: str) -> dict[str, Any]:
        """The keyword arguments that make this sampler with this schedule (checked names)."""
        extra = {_SIGMA_OPTION[schedule]: True} if schedule in _SIGMA_OPTION else {}
        return {**self.options, **extra}


# fmt: off
_DENOISING = {
    s.name: s
    for s in (
        Sampler("Euler", "EulerDiscreteScheduler", schedules=_SHAPED),
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", schedules=_SHAPED),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++"}, schedules=_SHAPED),
        Sampler("DPM2", "KDPM2DiscreteScheduler", schedules=_SHAPED),
        Sampler("Heun", "HeunDiscreteScheduler", schedules=_SHAPED),
        Sampler("LMS", "LMSDiscreteScheduler"),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler"),
        Sampler("UniPC", "UniPCMultistepScheduler", schedules=_SHAPED),
    )
}
_FLOW = {"Euler": Sampler("Euler", "FlowMatchEulerDiscreteScheduler")}
# fmt: on


def samplers_for(architecture: ArchitectureName) -> dict[str, Sampler]:
    return _FLOW if ARCHITECTURES[architecture].flow_matching else _DENOISING


def schedules_for(sampler: Sampler) -> list[str]:
    return [AUTOMATIC, *sorted(sampler.schedules)]


def sampler_named(architecture: ArchitectureName, name: str) -> Sampler | None:
    """The sampler a user means by `name` (case-insensitive, as A1111 matches them)."""
    wanted = name.strip().lower()
    return next((s for s in samplers_for(architecture).values() if s.name.lower() == wanted), None)


def schedule_named(name: str) -> str | None:
    wanted = name.strip().lower()
    if wanted in SCHEDULE_LABELS:
        return wanted
    return next((k for k, label in SCHEDULE_LABELS.items() if label.lower() == wanted), None)


# diffusers scheduler class -> the sampler name A1111-style tools show, for a model's own one
_NAMES_OF_CLASSES = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "FlowMatchEulerDiscreteScheduler": "Euler",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "KDPM2DiscreteScheduler": "DPM2",
    "HeunDiscreteScheduler": "Heun",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "UniPCMultistepScheduler": "UniPC",
}


def sampler_name(scheduler_class: str) -> str:
    return _NAMES_OF_CLASSES.get(scheduler_class, scheduler_class)


def check_sampler(i: int, stage: Stage, entry: ModelEntry, violations: list[Violation]) -> Stage:
    """The stage with its sampler and schedule named as listed, if they exist for its model."""
    if stage.sampler is None and stage.scheduler is None:
        return stage
    arch = entry.arch
    known = samplers_for(arch.name)
    sampler = sampler_named(arch.name, stage.sampler) if stage.sampler is not None else None
    if stage.sampler is not None and sampler is None:
        violations.append(
            Violation(
                "unknown_sampler",
                ("stages", i, "sampler"),
                f"{entry.name!r} ({arch.name}) has no sampler {stage.sampler!r}; its samplers: "
                f"{', '.join(known)}",
                {"samplers": list(known)},
            )
        )
        return stage
    schedule = schedule_named(stage.scheduler) if stage.scheduler is not None else AUTOMATIC
    allowed = schedules_for(sampler) if sampler is not None else [AUTOMATIC]
    if schedule not in allowed:
        which = f"sampler {sampler.name!r}" if sampler else f"{entry.name!r}'s own sampler"
        violations.append(
            Violation(
                "unknown_schedule",
                ("stages", i, "scheduler"),
                f"{which} takes the schedules {', '.join(allowed)}, not {stage.scheduler!r}",
                {"schedules": allowed},
            )
        )
        return stage
    return stage.model_copy(
        update={"sampler": sampler.name if sampler else None, "scheduler": schedule}
    )
