"""An OpenAI Images request as a job: the model it means, its size, and the job's refusals at
the OpenAI fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.exceptions import RequestValidationError

from app.openai.mapping import in_openai_terms, job_body, model_for, size_of, spec_of
from contract.registry import ModelRegistry
from contract.violations import JobRejected, Violation


@pytest.fixture(scope="module")
def registry(registry_file: Path) -> ModelRegistry:
    return ModelRegistry.load(registry_file)


def test_openais_own_model_names_mean_the_default_model(registry: ModelRegistry) -> None:
    for name in (None, "", "dall-e-2", "dall-e-3", "gpt-image-1"):
        assert model_for(name, registry) == registry.a1111_checkpoint
    assert model_for("demo-flux", registry) == "demo-flux"
    for refused in ("midjourney", "demo-sdxl-refiner"):  # unknown; draws from no text
        with pytest.raises(RequestValidationError) as error:
            model_for(refused, registry)
        [item] = error.value.errors()
        assert item["loc"] == ("body", "model")
        assert "GET /v1/models lists" in item["msg"]


def test_auto_is_the_models_native_size(registry: ModelRegistry) -> None:
    assert size_of("auto", "demo-sd15", registry) == (512, 512)
    assert size_of("auto", "demo-flux", registry) == (1024, 1024)
    assert size_of("96x64", "demo-flux", registry) == (96, 64)


def test_the_body_carries_what_was_asked_and_nothing_else() -> None:
    asked = {"prompt": "p", "n": 2, "steps": 3, "guidance_scale": None, "seed": 4,
             "negative_prompt": None}  # fmt: skip
    assert job_body("demo-sd15", (64, 64), asked) == {
        "prompt": "p", "num_images": 2, "width": 64, "height": 64, "seed": 4,
        "stages": [{"model": "demo-sd15", "steps": 3}],
    }  # fmt: skip


def test_refusals_point_at_the_openai_fields() -> None:
    rejected = JobRejected([
        Violation("size_not_multiple", ("width",), "w"),
        Violation("too_few_steps", ("stages", 0, "steps"), "s"),
        Violation("image_too_large", ("init_image",), "i"),
    ])  # fmt: skip
    assert [v.loc for v in in_openai_terms(rejected).violations] == [
        ("size",), ("steps",), ("image",)
    ]  # fmt: skip
    with pytest.raises(RequestValidationError) as small:
        spec_of({"prompt": "p", "width": 32, "height": 64, "stages": [{"model": "m"}]})
    assert small.value.errors()[0]["loc"] == ("body", "size")
