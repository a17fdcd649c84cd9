"""The pictures a job carries besides its init image (its mask, ControlNet control images,
IP-Adapter pictures), kept apart from the spec the envelope serves.

A job's record is what `GET /jobs/{id}` answers; megabytes of base64 there would be sent back
on every poll. The gateway takes them out at admission and stores their bytes in a hash of
their own (jobs.store); the worker puts them back before it checks the job again.
"""

from __future__ import annotations

import base64
from typing import TypeVar

from contract.spec import ControlNetUse, IpAdapterUse, JobSpec, Stage

SpecT = TypeVar("SpecT", bound=JobSpec)
UseT = TypeVar("UseT", ControlNetUse, IpAdapterUse)

# A hash field per picture: "<stage>.<unit>" for a ControlNet's (as jobs stored before
# IP-Adapters wrote them), "ip.<stage>.<unit>" for an IP-Adapter's, "mask" for the mask.
_IP = "ip."
_MASK = "mask"


def stage_pictures(spec: JobSpec) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Each picture a stage carries: where it stands in the spec, its base64, and its name in
    words (for the refusal a bad one gets)."""
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    for i, stage in enumerate(spec.stages):
        for j, use in enumerate(stage.controlnets or []):
            if use.image is not None:
                found.append(
                    (("stages", i, "controlnets", j, "image"), use.image, "the control image")
                )
        for j, ip in enumerate(stage.ip_adapters or []):
            found.append(
                (("stages", i, "ip_adapters", j, "image"), ip.image, "the IP-Adapter's picture")
            )
    return found


def has_stage_images(spec: JobSpec) -> bool:
    return spec.mask is not None or any(
        stage.controlnets or stage.ip_adapters for stage in spec.stages
    )


def without_stage_images(spec: SpecT) -> tuple[SpecT, dict[str, bytes]]:
    """The spec with every stage picture taken out (a ControlNet's image None, an IP-Adapter's
    empty), and their bytes by hash field."""
    images: dict[str, bytes] = {}
    stages = []
    for i, stage in enumerate(spec.stages):
        controls = []
        for j, use in enumerate(stage.controlnets or []):
            if use.image is not None:
                images[f"{i}.{j}"] = _bytes(use.image)
                use = use.model_copy(update={"image": None})
            controls.append(use)
        adapters = []
        for j, ip in enumerate(stage.ip_adapters or []):
            images[f"{_IP}{i}.{j}"] = _bytes(ip.image)
            adapters.append(ip.model_copy(update={"image": ""}))
        stages.append(_with_units(stage, controls, adapters))
    update: dict[str, object] = {"stages": stages}
    if spec.mask:
        images[_MASK] = _bytes(spec.mask)
        update["mask"] = ""  # there is one, kept apart
    return spec.model_copy(update=update), images


def with_stage_images(spec: SpecT, images: dict[str, bytes]) -> SpecT:
    """The spec with the pictures `without_stage_images` took out put back."""
    if not images:
        return spec

    def back(field: str, use: UseT) -> UseT:
        raw = images.get(field)
        if raw is None:
            return use
        return use.model_copy(update={"image": base64.b64encode(raw).decode()})

    stages = []
    for i, stage in enumerate(spec.stages):
        controls = [back(f"{i}.{j}", u) for j, u in enumerate(stage.controlnets or [])]
        adapters = [back(f"{_IP}{i}.{j}", u) for j, u in enumerate(stage.ip_adapters or [])]
        stages.append(_with_units(stage, controls, adapters))
    update: dict[str, object] = {"stages": stages}
    if _MASK in images:
        update["mask"] = base64.b64encode(images[_MASK]).decode()
    return spec.model_copy(update=update)


def _with_units(stage: Stage, controls: list[ControlNetUse], adapters: list[IpAdapterUse]) -> Stage:
    update: dict[str, object] = {}
    if stage.controlnets:
        update["controlnets"] = controls
    if stage.ip_adapters:
        update["ip_adapters"] = adapters
    return stage.model_copy(update=update) if update else stage


def _bytes(image: str) -> bytes:
    return base64.b64decode(image.partition(",")[2] or image)
