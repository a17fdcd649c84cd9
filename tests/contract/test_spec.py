"""The job spec's own validation: shapes and bounds, before any registry rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contract.resamplers import Upscaler
from contract.spec import JobSpec


def spec(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "m"}], **overrides}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prompt": "a\x00b"}, "prompt"),
        ({"width": 8}, "width"),
        ({"num_images": 5}, "num_images"),
        ({"stages": []}, "stages"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": "example.com/hook"}, "webhook_url"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_malformed_specs_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(spec(**overrides))
    assert field in {str(part) for e in error.value.errors() for part in e["loc"]}


def test_control_characters_are_refused_but_newlines_and_tabs_are_fine() -> None:
    assert JobSpec.model_validate(spec(prompt="a\tb\nc")).prompt == "a\tb\nc"
    with pytest.raises(ValidationError, match="U\\+0007"):
        JobSpec.model_validate(spec(negative_prompt="bell\x07"))


def test_a_webhook_url_is_an_http_url() -> None:
    parsed = JobSpec.model_validate(spec(webhook_url="https://hooks.example.com/imagegen"))
    assert str(parsed.webhook_url) == "https://hooks.example.com/imagegen"


def test_upscalers_know_whether_they_work_on_latents() -> None:
    assert Upscaler.LATENT_BICUBIC.works_on_latents
    assert not Upscaler.LANCZOS.works_on_latents
