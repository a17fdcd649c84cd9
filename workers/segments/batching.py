"""Several queued jobs' first segments as shared pipeline calls.

A GPU runs a batch of 8 latents in little more time than one, so jobs that want the same stages
(model, size, steps, sampler, LoRAs, handoffs, hires settings) make more pictures per second
together. The group runs stage by stage (workers.stages.chain.run_group): an SDXL base+refiner
job batches its base and its refiner. Each member keeps its own prompt, negative prompt, seeds
(one generator per picture, so its noise is what it would be alone), progress and cancel: a member
canceled mid-batch ends `canceled` at once and its pictures are dropped while the others go on.
Guidance scales may differ (workers.stages.guidance); whether a stage guides at all may not.

Which jobs qualify (`batch_key`): any first segment, from text or from an init image (each
member brings its own picture and its own mask: img2img and inpainting pipelines take one per
row). Everything a stage asks of its pipeline call but its prompts and guidance scale is part of
the key, and so is how the init image and the mask are met (strength, resize mode, blur, masked
content, inpaint area, outpaint): diffusers applies one strength, one step count, one sampler to
a whole call, and a batch's rows are one size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from contract.checked import CheckedSpec, UpscaleStage
from contract.envelope import FailureType
from contract.segments import Segment
from workers.stages.chain import Member
from workers.stages.outcomes import Failed

log = logging.getLogger("imagegen.worker")


@dataclass(frozen=True)
class BatchKey:
    # each stage of the segment as JSON, all but its prompts, and whether it has a negative
    # prompt (SDXL encodes "none" as zeros, an empty one as text: they cannot share a call)
    stages: tuple[str, ...]
    start: str  # how the first stage starts: from text, or how its init image and mask are met
    sizes: tuple[tuple[int, int], ...]  # each stage's picture size

    @property
    def largest_pixels(self) -> int:
        return max(w * h for w, h in self.sizes)

    @property
    def shape(self) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
        """What a call's memory depends on: the models and sizes, not steps or guidance."""
        return tuple(str(json.loads(s)["model"]) for s in self.stages), self.sizes


def batch_key(spec: CheckedSpec, segments: list[Segment]) -> BatchKey | None:
    """What a job's first segment must share with others to run in shared calls; None for an
    upscale job (an upscaler model works picture by picture, in tiles: nothing to share)."""
    if spec.upscales:
        return None
    stages = range(segments[0].start, segments[0].end)
    described = []
    for i in stages:
        stage = spec.stages[i]
        assert not isinstance(stage, UpscaleStage)
        # Each picture keeps its own control images; the ControlNets and their settings are
        # the call's. A Flux ControlNet reads the call's one guidance scale: with ControlNets,
        # jobs batch only with their own scale.
        exclude: dict[str, Any] = {"prompt": True, "negative_prompt": True}
        # Several ControlNets take one image each for a whole call in some pipelines
        # (workers.families): then jobs batch only with the same control images.
        if len(stage.controlnets or []) < 2:
            exclude["controlnets"] = {"__all__": {"image"}}
        if not stage.controlnets:
            exclude["guidance_scale"] = True
        # An IP-Adapter's picture is one per call (diffusers encodes one for all its rows): jobs
        # batch only with the same picture, keyed by its digest.
        exclude["ip_adapters"] = {"__all__": {"image"}}
        fields = stage.model_dump(mode="json", exclude=exclude)
        fields["ip_pictures"] = [
            hashlib.sha256(u.image.encode()).hexdigest() for u in stage.ip_adapters or []
        ]
        fields["negative"] = bool(spec.negative_prompt_of(stage))
        # Each picture keeps its own scale (workers.stages.guidance); whether the pipeline guides at
        # all (a scale above 1) is one choice per call.
        fields["guided"] = stage.guidance_scale > 1
        described.append(json.dumps(fields, sort_keys=True))
    return BatchKey(tuple(described), start_key(spec), tuple(spec.size_of(i) for i in stages))


# What a job's first stage starts from, but its pictures: each member keeps its own init image
# and mask.
_START_FIELDS = (
    "strength", "init_resize", "mask_blur", "invert_mask", "outpaint", "inpaint_area",
    "inpaint_padding", "masked_content",
)  # fmt: skip


def start_key(spec: CheckedSpec) -> str:
    """How the job's first stage starts (`BatchKey.start`), from its fields alone: a stored spec
    (its mask kept apart, `""` there) gives what the spec read back with its pictures does."""
    if spec.strength is None:
        return "text"
    fields = spec.model_dump(mode="json", include=set(_START_FIELDS))
    fields["mask"] = spec.mask is not None
    return json.dumps(fields, sort_keys=True)


class DeviceMemory(Protocol):
    """The accelerator's allocator, as far as batch sizing needs it."""

    def total(self) -> int: ...
    def allocated(self) -> int: ...
    def reset_peak(self) -> None: ...
    def peak(self) -> int: ...


class CudaMemory:
    """The current CUDA device's (a worker per GPU, chosen by CUDA_VISIBLE_DEVICES)."""

    def total(self) -> int:
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)

    def allocated(self) -> int:
        return int(torch.cuda.memory_allocated())

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated())


def device_memory() -> DeviceMemory | None:
    """The GPU's allocator; None on a CPU worker, where batches are bounded by settings alone."""
    return CudaMemory() if torch.cuda.is_available() else None


# The share of the GPU a batch may plan to fill: the allocator's cache and fragmentation need
# the rest.
USABLE_SHARE = 0.9


@dataclass
class Batching:
    """How a worker batches: the pool whose queue it gathers from, how long a job waits for
    companions, and how many pictures one call may make.

    That number is the least of the settings' bounds (pictures, megapixels), what the GPU's free
    memory holds at the cost per picture measured in earlier calls of the same models and sizes
    (the memory the loaded models leave, so a worker under a smaller memory budget batches more),
    and what an out-of-memory error taught: a call that ran out halves the bound for its shape.
    """

    pool: str
    window_s: float
    max_images: int = 8
    max_megapixels: float = 8.0  # pictures × their pixels per call: a bound on activations
    device: DeviceMemory | None = field(default_factory=device_memory)
    # per BatchKey.shape: bytes a picture added to a call's peak; the bound an OOM left
    per_picture: dict[object, int] = field(default_factory=dict)
    ran_out_at: dict[object, int] = field(default_factory=dict)

    def capacity(self, key: BatchKey) -> int:
        bounds = [self.max_images, int(self.max_megapixels * 1e6 // key.largest_pixels)]
        if key.shape in self.ran_out_at:
            bounds.append(self.ran_out_at[key.shape])
        cost = self.per_picture.get(key.shape)
        if self.device is not None and cost:
            free = int(self.device.total() * USABLE_SHARE) - self.device.allocated()
            bounds.append(free // cost)
        return max(1, min(bounds))

    def measuring(self) -> int | None:
        """Before a call: the allocator's peak reset, and what it holds (None without a GPU)."""
        if self.device is None:
            return None
        self.device.reset_peak()
        return self.device.allocated()

    def learn(self, key: BatchKey, pictures: int, before: int | None) -> None:
        """After a call that did not run out of memory: what a picture of this shape costs, from
        the call's peak allocation (`before`: what `measuring` said)."""
        if self.device is None or before is None:
            return
        # What the call held only while it ran: a model or adapter it loaded stays allocated
        # after it. Its fixed costs (text encoding, decode workspace) count as if per picture.
        after = self.device.allocated()
        cost = (self.device.peak() - max(before, after)) // pictures
        self.per_picture[key.shape] = max(cost, self.per_picture.get(key.shape, 0))

    def ran_out(self, key: BatchKey, pictures: int) -> int:
        """A call of `pictures` ran out of memory: the bound for its shape from now on."""
        bound = max(1, pictures // 2)
        self.ran_out_at[key.shape] = min(bound, self.ran_out_at.get(key.shape, bound))
        log.warning("a call of %d pictures ran out of memory; batches now %d", pictures, bound)
        return bound


def run_within_memory(
    run: Callable[[list[Member]], None], members: list[Member], key: BatchKey, batching: Batching
) -> None:
    """`run` the group, learning its cost per picture; if the call runs out of GPU memory, run
    it again in parts of half the pictures (and remember that bound for the shape), so a batch
    too big for the GPU costs time, not its members' jobs. A part that fails fails its own
    members, not those of the parts that made their pictures; a job alone that runs out of
    memory ends so."""
    pictures = sum(m.spec.num_images for m in members if m.running)
    before = batching.measuring()
    run(members)
    # The members still running when the call ran out (the others had ended already).
    ran_out = [m for m in members if _ran_out_of_memory(m)]
    if not ran_out:
        batching.learn(key, pictures, before)
        return
    if len(members) == 1:
        return
    bound = batching.ran_out(key, pictures)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the failed call's tensors went with its frames
    for member in ran_out:
        # From the segment's first stage (its text or its own init image), whichever stage ran
        # out: its pictures are made as they would be alone.
        member.again()
    for part in _parts(ran_out, bound):
        run_within_memory(run, part, key, batching)


def _ran_out_of_memory(member: Member) -> bool:
    return isinstance(member.outcome, Failed) and member.outcome.type is FailureType.OUT_OF_MEMORY


def _parts(members: list[Member], pictures: int) -> list[list[Member]]:
    """Members in order, in groups of at most `pictures` pictures (a member is never split)."""
    parts: list[list[Member]] = []
    for member in members:
        if parts and sum(m.spec.num_images for m in parts[-1]) + member.spec.num_images <= pictures:
            parts[-1].append(member)
        else:
            parts.append([member])
    return parts
