"""How a job's stages split into segments: maximal runs of stages served by one worker pool.

Each segment runs on one worker; a job whose stages use models of different pools moves from
worker to worker between segments, as pictures (only a pixel handoff may cross pools).
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.registry import ModelRegistry
from contract.spec import JobSpec


@dataclass(frozen=True)
class Segment:
    start: int  # first stage (inclusive)
    end: int  # last stage (exclusive)
    pool: str


def plan_segments(spec: JobSpec, registry: ModelRegistry) -> list[Segment]:
    """Split the stages where the pool changes (an upscale job's one stage runs on its
    upscaler's pool)."""
    pools = [
        registry.models[stage.model].pool
        if stage.model is not None
        else registry.upscale_pool(str(stage.upscaler))
        for stage in spec.stages
    ]
    segments: list[Segment] = []
    start = 0
    for i in range(1, len(pools) + 1):
        if i == len(pools) or pools[i] != pools[start]:
            segments.append(Segment(start, i, pools[start]))
            start = i
    return segments
