"""Samplers as users name them (A1111's names), per architecture, and the diffusers scheduler
each one is.

A stage picks a `sampler` (default: the scheduler the model ships with) and a `scheduler`, the
sigma schedule A1111 calls "Schedule type" (`automatic` keeps the sampler's own). Flow-matching
models (Flux, SD3.5, Chroma: their row says so) take only their flow-matching Euler. The gateway
checks the names at admission and the worker builds the scheduler from the model's own scheduler
config, so the training settings (betas, timestep spacing, Flux's shift) carry over.

A1111's schedule names map to diffusers as follows. `karras` and `exponential` are diffusers'
sigma options. `uniform` and `normal` (the model's sigmas at evenly spaced timesteps, first
to last) are `timestep_spacing="linspace"`. `sgm_uniform` and `simple` (evenly spaced from the
top, the last one left out) are `"trailing"`. `ddim` (every n-th timestep from 1) is
`"leading"`. A flow-matching Euler's own schedule is already uniform in time, so `uniform`,
`normal`, `simple` and `sgm_uniform` name it there. Refused, with the list: `beta` (diffusers'
beta sigmas need scipy, which is not a dependency), `polyexponential`, `kl_optimal`,
`align_your_steps*` and `turbo` (no diffusers equivalent).

Sampler names are A1111's, or one of its aliases (`k_euler_a`; ComfyUI's `euler_ancestral` too).
A name that ends in a schedule's label, as A1111 before 1.9 combined them (`DPM++ 2M Karras`),
is split into the sampler and its schedule, as A1111 does.
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
SCHEDULE_LABELS = {
    AUTOMATIC: "Automatic", "uniform": "Uniform", "karras": "Karras",
    "exponential": "Exponential", "sgm_uniform": "SGM Uniform", "simple": "Simple",
    "normal": "Normal", "ddim": "DDIM",
}  # fmt: skip
# A1111's schedules this service has no equivalent of (GET /sdapi/v1/schedulers leaves them out).
UNSERVED_SCHEDULES = ("beta", "polyexponential", "kl_optimal", "align_your_steps", "turbo")
_SIGMA_OPTION = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas"}
_SPACING = {"uniform": "linspace", "normal": "linspace", "sgm_uniform": "trailing",
            "simple": "trailing", "ddim": "leading"}  # fmt: skip
_SHAPED = frozenset(_SIGMA_OPTION)
_SPACED = frozenset(_SPACING)
# What a flow-matching Euler's own schedule (uniform in time) is called.
_FLOW_NAMES = frozenset({"uniform", "normal", "simple", "sgm_uniform"})


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str  # a diffusers scheduler
    options: dict[str, Any] = field(default_factory=dict)
    schedules: frozenset[str] = frozenset()  # beyond `automatic`
    aliases: tuple[str, ...] = ()  # A1111's (and ComfyUI's) other names for it

    def scheduler_options(self, schedule: str) -> dict[str, Any]:
        """The keyword arguments that make this sampler with this schedule (checked names)."""
        if self.scheduler_class.startswith("FlowMatch"):
            return dict(self.options)  # its own schedule is what every name it takes means
        extra: dict[str, Any] = {}
        if schedule in _SIGMA_OPTION:
            extra = {_SIGMA_OPTION[schedule]: True}
        elif schedule in _SPACING:
            extra = {"timestep_spacing": _SPACING[schedule]}
        return {**self.options, **extra}


# fmt: off
_DENOISING = {
    s.name: s
    for s in (
        Sampler("Euler", "EulerDiscreteScheduler", schedules=_SHAPED | _SPACED,
                aliases=("k_euler", "euler")),
        Sampler("Euler a", "EulerAncestralDiscreteScheduler", schedules=_SPACED,
                aliases=("k_euler_a", "k_euler_ancestral", "euler_a", "euler_ancestral")),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", schedules=_SHAPED | _SPACED,
                aliases=("k_dpmpp_2m", "dpmpp_2m")),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++"}, schedules=_SHAPED | _SPACED,
                aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde")),
        Sampler("DPM2", "KDPM2DiscreteScheduler", schedules=_SHAPED | _SPACED,
                aliases=("k_dpm_2", "dpm_2")),
        Sampler("Heun", "HeunDiscreteScheduler", schedules=_SHAPED | _SPACED,
                aliases=("k_heun", "heun")),
        Sampler("LMS", "LMSDiscreteScheduler", schedules=_SPACED, aliases=("k_lms", "lms")),
        Sampler("DDIM", "DDIMScheduler", schedules=_SPACED, aliases=("ddim",)),
        Sampler("PLMS", "PNDMScheduler", schedules=_SPACED, aliases=("plms",)),
        Sampler("UniPC", "UniPCMultistepScheduler", schedules=_SHAPED | _SPACED,
                aliases=("unipc", "uni_pc")),
    )
}
_FLOW = {
    "Euler": Sampler("Euler", "FlowMatchEulerDiscreteScheduler", schedules=_FLOW_NAMES,
                     aliases=("k_euler", "euler")),
}
# fmt: on


def samplers_for(architecture: ArchitectureName) -> dict[str, Sampler]:
    return _FLOW if ARCHITECTURES[architecture].flow_matching else _DENOISING


def schedules_for(sampler: Sampler) -> list[str]:
    return [AUTOMATIC, *sorted(sampler.schedules)]


def sampler_named(architecture: ArchitectureName, name: str) -> Sampler | None:
    """The sampler a user means by `name` or one of its aliases (case-insensitive, as A1111
    matches them)."""
    wanted = name.strip().lower()
    return next(
        (
            s
            for s in samplers_for(architecture).values()
            if wanted == s.name.lower() or wanted in s.aliases
        ),
        None,
    )


def combined_name(architecture: ArchitectureName, name: str) -> tuple[Sampler, str] | None:
    """A sampler and schedule named together, as A1111 before 1.9 did (`DPM++ 2M Karras`):
    split as A1111 splits them now. None where `name` is not one."""
    for schedule, label in SCHEDULE_LABELS.items():
        if schedule != AUTOMATIC and name.strip().lower().endswith(" " + label.lower()):
            sampler = sampler_named(architecture, name.strip()[: -len(label)])
            if sampler is not None:
                return sampler, schedule
    return None


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
    named_schedule = None
    if stage.sampler is not None and sampler is None:
        combined = combined_name(arch.name, stage.sampler)
        if combined is not None:
            sampler, named_schedule = combined
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
    if schedule == AUTOMATIC and named_schedule is not None:
        schedule = named_schedule  # the name's, unless a schedule was asked for apart
    allowed = schedules_for(sampler) if sampler is not None else [AUTOMATIC]
    if schedule not in allowed:
        which = f"sampler {sampler.name!r}" if sampler else f"{entry.name!r}'s own sampler"
        asked = stage.scheduler if stage.scheduler is not None else schedule
        unserved = (
            f"; {asked!r} has no equivalent here"
            if str(asked).strip().lower().startswith(UNSERVED_SCHEDULES)
            else ""
        )
        # A schedule the sampler's name carried is refused where it was sent.
        field = (
            "sampler" if stage.scheduler in (None, AUTOMATIC) and named_schedule else "scheduler"
        )
        violations.append(
            Violation(
                "unknown_schedule",
                ("stages", i, field),
                f"{which} takes the schedules {', '.join(allowed)}, not {asked!r}{unserved}",
                {"schedules": allowed},
            )
        )
        return stage
    return stage.model_copy(
        update={"sampler": sampler.name if sampler else None, "scheduler": schedule}
    )
