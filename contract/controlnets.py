"""The ControlNet rule: a ControlNet steers only models of the architecture it was made for.

An SD1.5 ControlNet on an SDXL model is `mat1 and mat2 shapes cannot be multiplied (154x2048 and
768x320)` mid-run in every peer that lets it through; on Flux it does not fit at all. The gateway
refuses it at admission, naming both sides and what fits, and the worker checks again. Each
unit's control image is decoded at admission too (a bad one is the caller's 422, not a failed
job), or taken from the previous stage's picture.
"""

from __future__ import annotations

from collections.abc import Mapping

from contract.registry import ControlNetEntry, ModelEntry
from contract.spec import ControlNetUse, Handoff, JobSpec, Mode, Stage
from contract.violations import Violation


def controlnet_violation(
    i: int,
    j: int,
    use: ControlNetUse,
    entry: ModelEntry,
    controlnets: Mapping[str, ControlNetEntry],
) -> Violation | None:
    """Why ControlNet j of stage i cannot steer the stage's model, or None. The gateway and the
    worker both word it so."""
    loc = ("stages", i, "controlnets", j)
    controlnet = controlnets.get(use.name)
    if controlnet is None:
        known = ", ".join(sorted(controlnets)) or "none"
        return Violation(
            "unknown_controlnet",
            (*loc, "name"),
            f"ControlNet {use.name!r} is not registered; registered ControlNets: {known} (GET "
            "/controlnets)",
            {"controlnet": use.name},
        )
    if controlnet.architecture != entry.architecture:
        fitting = sorted(n for n, c in controlnets.items() if c.architecture == entry.architecture)
        fits = f"{entry.architecture} ControlNets here: {', '.join(fitting) or 'none'}"
        return Violation(
            "controlnet_architecture_mismatch",
            loc,
            f"ControlNet {use.name!r} was made for {controlnet.architecture}, but stage {i}'s "
            f"model {entry.name!r} is {entry.architecture}: its layers do not fit that model's. "
            f"Pick a ControlNet of its architecture ({fits}) or put it on a "
            f"{controlnet.architecture} stage.",
            {"controlnet": controlnet.architecture, "model": entry.architecture},
        )
    return None


def check_controlnets(
    i: int,
    spec: JobSpec,
    entry: ModelEntry,
    controlnets: Mapping[str, ControlNetEntry],
    violations: list[Violation],
) -> None:
    """Every ControlNet of stage i exists, fits the stage's model, can be given a control image,
    and runs in a call that can take it. (Its picture is decoded after every cheap check:
    `contract.job_rules.decode_pictures`.)"""
    stage = spec.stages[i]
    uses = stage.controlnets or []
    if not uses:
        return
    following = spec.stages[i + 1] if i + 1 < len(spec.stages) else None
    mid_schedule = stage.mode is Mode.REFINE or (
        following is not None
        and following.mode is Mode.REFINE
        and (i > 0 or spec.init_image is not None)
    )
    if mid_schedule:
        violations.append(
            Violation(
                "controlnet_unsupported",
                ("stages", i, "controlnets"),
                f"stage {i} hands over mid-schedule from a picture (refine), which diffusers' "
                "ControlNet pipelines do not; steer the base stage from text, or a hires stage",
            )
        )
    acting = [u for u in uses if u.acts]
    keys = entry.arch.controlnet_keys
    kind = "text" if i == 0 and spec.init_image is None else "image"
    own_pictures = spec.num_images > 1 and any(u.image_from for u in acting)
    if (
        len(acting) > 1
        and own_pictures
        and keys is not None
        and kind not in keys.several_per_picture
    ):
        violations.append(
            Violation(
                "controlnet_unsupported",
                ("stages", i, "controlnets"),
                f"with several ControlNets, {entry.architecture}'s pipeline from "
                f"{'text' if kind == 'text' else 'a picture'} takes one control image per "
                "ControlNet for all the job's pictures, and image_from: previous gives each "
                "picture its own; ask for num_images 1, or send image",
            )
        )
    for j, use in enumerate(uses):
        misfit = controlnet_violation(i, j, use, entry, controlnets)
        if misfit is not None:
            violations.append(misfit)
        violations += _image_violations(i, j, use, stage)


def _image_violations(i: int, j: int, use: ControlNetUse, stage: Stage) -> list[Violation]:
    loc = ("stages", i, "controlnets", j)
    if use.image is not None and use.image_from is not None:
        return [
            Violation(
                "field_not_allowed",
                (*loc, "image_from"),
                "a ControlNet takes one control image: send image or image_from, not both",
            )
        ]
    if use.image_from is not None:
        if i == 0:
            return [
                Violation(
                    "field_not_allowed",
                    (*loc, "image_from"),
                    "the first stage has no previous stage to take a picture from; send image",
                )
            ]
        if stage.handoff is Handoff.LATENT or stage.mode is Mode.REFINE:
            return [
                Violation(
                    "field_not_allowed",
                    (*loc, "image_from"),
                    "image_from: previous takes the previous stage's picture, which a latent "
                    "handoff never decodes; use handoff: pixel, or send image",
                )
            ]
        return []
    if use.image is None:
        return [
            Violation(
                "missing",
                (*loc, "image"),
                "a ControlNet needs a control image: send image (base64 PNG or JPEG), or "
                "image_from: previous on a later stage",
            )
        ]
    return []
