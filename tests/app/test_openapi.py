"""The committed openapi/openapi.json is what the app serves (`make openapi` regenerates it)."""

from __future__ import annotations

import json

from app.keys import digest
from app.main import create_app
from app.openapi import render
from app.settings import GatewaySettings
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


def test_security_is_declared_only_where_keys_are_needed(
    gateway_settings: GatewaySettings,
) -> None:
    """Open mode needs no key, and says so: a generated client then takes a plain client."""
    open_document = create_app(gateway_settings).openapi()
    assert "securitySchemes" not in open_document.get("components", {})
    keyed = gateway_settings.model_copy(update={"api_keys": {"alice": digest("k")}})
    keyed_document = create_app(keyed).openapi()
    for document, secured in ((open_document, False), (keyed_document, True)):
        job_operations = [
            operation
            for path, operations in document["paths"].items()
            if path.startswith("/jobs") or path == "/models"
            for operation in operations.values()
        ]
        assert len(job_operations) == 6
        assert all(("security" in op) is secured for op in job_operations)


def test_every_answer_is_declared_with_a_schema_and_every_error_is_an_error_body() -> None:
    document = json.loads(render())
    answers = [
        (f"{method.upper()} {path} {code}", response)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for code, response in operation["responses"].items()
    ]
    assert len(answers) > 30
    for name, response in answers:
        content = response.get("content")
        assert content, f"{name} declares no body"
        for media_type, body in content.items():
            # A stream declares its events (OpenAPI 3.2's itemSchema, as FastAPI writes it).
            schema = body.get("itemSchema" if media_type == "text/event-stream" else "schema")
            assert schema, f"{name} {media_type} has no schema"
        if int(name.rsplit(" ", 1)[1]) >= 400:
            # The OpenAI face's errors are OpenAI's shape (its SDKs parse them).
            body = "OpenAIErrorBody" if name.split(" ")[1].startswith("/v1/") else "ErrorBody"
            error = {"$ref": f"#/components/schemas/{body}"}
            assert content["application/json"]["schema"] == error, name
