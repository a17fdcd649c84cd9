"""Every numeric field of the A1111 face's requests, at the edges (NaN, ±Infinity, 0, negative,
past 64 bits, a float where an integer is meant, a string), and sizes that compute to nothing:
a 422 naming the field (or the job rules' refusal), never an exception of another kind. The
request model and the mapping onto a job are what HTTP runs (in-process; the A1111 routes wait
for their job, which no worker runs here)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.a1111.mapping import img2img_spec, txt2img_spec
from app.a1111.schemas import Img2ImgRequest, Txt2ImgRequest
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.violations import JobRejected
from tests.helpers import png_b64

EDGES: list[Any] = [math.nan, math.inf, -math.inf, 0, -1, -(2**70), 2**70, 1.5, "2", True, None]
IMAGE = png_b64(64, 64)


@pytest.fixture(scope="module")
def registry(registry_file: Path) -> ModelRegistry:
    return ModelRegistry.load(registry_file)


def numeric_fields(model: type[Txt2ImgRequest] | type[Img2ImgRequest]) -> list[str]:
    fields = []
    for name, field in model.model_fields.items():
        text = str(field.annotation)
        if "int" in text or "float" in text:
            fields.append(name)
    return fields


def outcome(kind: str, body: dict[str, Any], registry: ModelRegistry) -> str:
    """How the face ends a request: 'refused' (a 4xx naming a field), or 'admitted'."""
    try:
        if kind == "txt2img":
            spec = txt2img_spec(Txt2ImgRequest.model_validate(body), "demo-sd15", registry)
        else:
            spec = img2img_spec(Img2ImgRequest.model_validate(body), "demo-sd15", registry)
        check_job(spec, registry, JobLimits())
    except (ValidationError, RequestValidationError, JobRejected):
        return "refused"
    return "admitted"


@pytest.mark.parametrize("kind", ["txt2img", "img2img"])
def test_every_numeric_field_at_its_edges_is_refused_or_admitted_never_a_crash(
    kind: str, registry: ModelRegistry
) -> None:
    model = Txt2ImgRequest if kind == "txt2img" else Img2ImgRequest
    base: dict[str, Any] = {"prompt": "p", "width": 64, "height": 64, "steps": 2}
    if kind == "img2img":
        base["init_images"] = [IMAGE]
    for field in numeric_fields(model):
        for value in EDGES:
            for hires in ({}, {"enable_hr": True}) if kind == "txt2img" else ({},):
                body = {**base, **hires, field: value}
                assert outcome(kind, body, registry) in ("refused", "admitted"), (field, value)
        integer = "int" in str(model.model_fields[field].annotation)
        for value in (math.nan, math.inf, *([2**70] if integer else [])):  # no number here
            assert outcome(kind, {**base, field: value}, registry) == "refused", (field, value)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)),
    height=st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)),
    hr_x=st.one_of(st.integers(-10, 5000), st.floats(allow_nan=True, allow_infinity=True)),
    hr_y=st.one_of(st.integers(-10, 5000), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_sizes_that_compute_to_nothing_are_refused(
    registry: ModelRegistry, width: Any, height: Any, hr_x: Any, hr_y: Any
) -> None:
    body = {"prompt": "p", "width": width, "height": height, "enable_hr": True,
            "hr_resize_x": hr_x, "hr_resize_y": hr_y, "steps": 2}  # fmt: skip
    assert outcome("txt2img", body, registry) in ("refused", "admitted")


def test_the_reported_cases_are_422s_naming_the_field(client: TestClient) -> None:
    # JSON's NaN and Infinity, as Python's parser takes them, and a size that divides by zero
    for text, field in (
        ('{"prompt": "p", "denoising_strength": NaN}', "denoising_strength"),
        ('{"prompt": "p", "cfg_scale": Infinity}', "cfg_scale"),
        ('{"prompt": "p", "enable_hr": true, "hr_resize_x": 512, "width": 0}', "width"),
        ('{"prompt": "p", "enable_hr": true, "hr_resize_y": 512, "height": 0}', "height"),
    ):
        response = client.post("/sdapi/v1/txt2img", content=text,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 422, (text, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", field], text
