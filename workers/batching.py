"""Several queued jobs' first segments as shared pipeline calls.

A GPU runs a batch of 8 latents in little more time than one, so jobs that want the same stages
(model, size, steps, sampler, guidance, LoRAs, handoffs, hires settings) make more pictures per
second together. The group runs stage by stage (workers.chain.run_group): an SDXL base+refiner
job batches its base and its refiner. Each member keeps its own prompt, negative prompt, seeds
(one generator per picture, so its noise is what it would be alone), progress and cancel: a member
canceled mid-batch ends `canceled` at once and its pictures are dropped while the others go on.

Which jobs qualify (`batch_key`): any first segment that starts from text (no init image).
Everything a stage asks of its pipeline call but its prompts is part of the key: diffusers
applies one guidance scale, one strength, one step count to a whole call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from contract.segments import Segment
from contract.spec import JobSpec
from contract.stage_sizes import stage_size
from workers.chain import negative_prompt_of


@dataclass(frozen=True)
class BatchKey:
    # each stage of the segment as JSON, all but its prompts, and whether it has a negative
    # prompt (SDXL encodes "none" as zeros, an empty one as text: they cannot share a call)
    stages: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # each stage's picture size

    @property
    def model(self) -> str:
        return str(json.loads(self.stages[0])["model"])

    @property
    def models(self) -> frozenset[str]:
        return frozenset(str(json.loads(s)["model"]) for s in self.stages)

    @property
    def largest_pixels(self) -> int:
        return max(w * h for w, h in self.sizes)


def batch_key(spec: JobSpec, segments: list[Segment]) -> BatchKey | None:
    """What a job's first segment must share with others to run in shared calls; None if it
    cannot run batched (an init image is the job's own input)."""
    if spec.strength is not None:
        return None
    stages = range(segments[0].start, segments[0].end)
    described = []
    for i in stages:
        stage = spec.stages[i]
        fields = stage.model_dump(mode="json", exclude={"prompt", "negative_prompt"})
        fields["negative"] = bool(negative_prompt_of(spec, stage))
        described.append(json.dumps(fields, sort_keys=True))
    return BatchKey(tuple(described), tuple(stage_size(spec, i) for i in stages))


@dataclass(frozen=True)
class Batching:
    """How a worker batches: the pool whose queue it gathers from, how long a job waits for
    companions, and how many pictures one call may make."""

    pool: str
    window_s: float
    max_images: int = 8
    max_megapixels: float = 8.0  # pictures × their pixels per call: a bound on activations

    def capacity(self, key: BatchKey) -> int:
        by_pixels = int(self.max_megapixels * 1e6 // key.largest_pixels)
        return max(1, min(self.max_images, by_pixels))
