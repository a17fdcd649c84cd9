"""The committed openapi/openapi.json is what the app serves (`make openapi` regenerates it)."""

from __future__ import annotations

import json

from app.openapi import render
from jobs.settings import REPO_ROOT


def test_committed_openapi_matches_the_app() -> None:
    committed = (REPO_ROOT / "openapi" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(render()), "run `make openapi` and commit the result"


def test_openapi_carries_the_worked_examples_and_the_422_example() -> None:
    document = json.loads(render())
    operation = document["paths"]["/jobs"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert {"sd15_txt2img", "sdxl_refiner", "sd15_flux_hires", "flux_latent_hires"} <= set(examples)
    refused = operation["responses"]["422"]["content"]["application/json"]["example"]
    assert refused["detail"][0]["type"] == "latent_space_mismatch"
