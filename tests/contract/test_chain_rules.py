"""Every ordered pair of architectures x handoff x mode, through the real gateway and Redis.

The expectation is derived independently of `contract.chain_rules`: from the latent-space column
of the architecture table and the documented rules, plus a hand-written table of the pairs the
service exists for, so a wrong row in either place fails here.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from contract.architectures import ARCHITECTURES
from tests.helpers import png_b64, queued_anything

MODEL_OF = {arch: f"demo-{arch}" for arch in ARCHITECTURES}

# Latent handoffs that must be accepted, by hand (all others between these four are refused).
LATENT_COMPATIBLE = {
    ("sd15", "sd15"),
    ("sdxl", "sdxl"),
    ("sdxl", "sdxl-refiner"),
    ("sdxl-refiner", "sdxl"),
    ("sdxl-refiner", "sdxl-refiner"),
    ("flux", "flux"),
}
MID_SCHEDULE = {"sdxl", "sdxl-refiner"}

CASES = list(
    itertools.product(ARCHITECTURES, ARCHITECTURES, ("latent", "pixel"), ("refine", "hires"))
)


def expected_errors(source: str, target: str, handoff: str, mode: str) -> set[tuple[str, str]]:
    expected = set()
    same_space = ARCHITECTURES[source].latent_space == ARCHITECTURES[target].latent_space
    assert same_space == ((source, target) in LATENT_COMPATIBLE), "table and rule disagree"
    if handoff == "latent" and not same_space:
        expected.add(("latent_space_mismatch", "handoff"))
    if mode == "refine" and handoff == "pixel":
        expected.add(("refine_needs_latent_handoff", "handoff"))
    if mode == "refine" and not {source, target} <= MID_SCHEDULE:
        expected.add(("refine_unsupported", "mode"))
    return expected


def two_stage_spec(source: str, target: str, handoff: str, mode: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "prompt": "a lighthouse",
        "width": 256,
        "height": 256,
        "stages": [
            {"model": MODEL_OF[source], "steps": 4},
            {"model": MODEL_OF[target], "mode": mode, "handoff": handoff, "steps": 4},
        ],
    }
    if mode == "hires":
        spec["stages"][1]["upscaler"] = "latent-bilinear" if handoff == "latent" else "lanczos"
        spec["stages"][1]["scale"] = 2
    if not ARCHITECTURES[source].text_to_image:
        spec["init_image"] = png_b64(64, 64)  # a refiner can only start from a picture
    return spec


def test_matrix_covers_every_pair() -> None:
    assert len(CASES) == len(ARCHITECTURES) ** 2 * 4


@pytest.mark.parametrize(("source", "target", "handoff", "mode"), CASES)
def test_handoff_rule(
    client: TestClient, redis: Redis, source: str, target: str, handoff: str, mode: str
) -> None:
    response = client.post("/jobs", json=two_stage_spec(source, target, handoff, mode))
    expected = expected_errors(source, target, handoff, mode)
    if not expected:
        assert response.status_code == 202, response.text
        assert redis.llen("rq:queue:imagegen.default") == 1
        return
    assert response.status_code == 422, response.text
    got = {(e["type"], e["loc"][-1]) for e in response.json()["detail"]}
    assert got == expected
    for error in response.json()["detail"]:
        assert error["loc"][:3] == ["body", "stages", 1]
    assert not queued_anything(redis), "a refused job must leave nothing in Redis"


def test_mismatch_error_names_both_models_spaces_and_fix(client: TestClient, redis: Redis) -> None:
    response = client.post("/jobs", json=two_stage_spec("sd15", "flux", "latent", "hires"))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "latent_space_mismatch"
    assert error["loc"] == ["body", "stages", 1, "handoff"]
    for needle in (
        "demo-sd15",
        "demo-flux",
        "sd1 (4 channels)",
        "flux (16 channels",
        "handoff: pixel",
    ):
        assert needle in error["msg"]
    assert error["ctx"]["from_latent_space"]["name"] == "sd1"
    assert error["ctx"]["to_latent_space"]["channels"] == 16


def test_sd15_to_sdxl_is_refused_although_both_are_4_channel(
    client: TestClient, redis: Redis
) -> None:
    response = client.post("/jobs", json=two_stage_spec("sd15", "sdxl-refiner", "latent", "hires"))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    ctx = error["ctx"]
    assert ctx["from_latent_space"]["channels"] == ctx["to_latent_space"]["channels"] == 4
    assert ctx["from_latent_space"]["scaling_factor"] != ctx["to_latent_space"]["scaling_factor"]
