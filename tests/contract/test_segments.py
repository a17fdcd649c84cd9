"""Segments: a job's stages split where the worker pool changes."""

from __future__ import annotations

from contract.registry import ModelRegistry
from contract.segments import Segment, plan_segments
from contract.spec import JobSpec

REGISTRY = ModelRegistry.model_validate(
    {
        "models": {
            "a": {"architecture": "sd15", "source": {"folder": "/m/a"}, "pool": "sd"},
            "b": {"architecture": "sd15", "source": {"folder": "/m/b"}, "pool": "sd"},
            "f": {"architecture": "flux", "source": {"folder": "/m/f"}, "pool": "flux"},
        }
    }
)


def spec(*models: str) -> JobSpec:
    stages = [{"model": models[0]}, *({"model": m, "mode": "hires"} for m in models[1:])]
    return JobSpec.model_validate({"prompt": "p", "width": 64, "height": 64, "stages": stages})


def test_one_pool_is_one_segment() -> None:
    assert plan_segments(spec("a", "b"), REGISTRY) == [Segment(0, 2, "sd")]


def test_a_pool_change_starts_a_segment_and_a_return_starts_another() -> None:
    assert plan_segments(spec("a", "f", "b"), REGISTRY) == [
        Segment(0, 1, "sd"),
        Segment(1, 2, "flux"),
        Segment(2, 3, "sd"),
    ]
