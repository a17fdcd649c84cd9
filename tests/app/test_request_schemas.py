"""Request schemas apart from answers': what openapi-typescript's default output needs to let a
client leave out what the server fills in."""

from __future__ import annotations

import json
from typing import Any

from app.openapi import render
from app.request_schemas import apart


def document() -> dict[str, Any]:
    schemas = {
        "Body": {"title": "Body", "properties": {
            "n": {"type": "integer", "default": 1, "description": "How many."},
            "use": {"$ref": "#/components/schemas/Use"}}},
        "Use": {"title": "Use", "properties": {"weight": {"type": "number", "default": 1.0}}},
        "Answer": {"title": "Answer", "properties": {"use": {"$ref": "#/components/schemas/Use"}}},
    }  # fmt: skip
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Body"}}}}
    answer = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}}
    return {"paths": {"/x": {"post": {"requestBody": body, "responses": {"200": answer}}}},
            "components": {"schemas": schemas}}  # fmt: skip


def test_requests_lose_their_defaults_and_answers_keep_theirs() -> None:
    doc = document()
    apart(doc)
    schemas = doc["components"]["schemas"]
    # request-only: in place, the default said in the description
    assert schemas["Body"]["properties"]["n"] == {
        "type": "integer",
        "description": "How many. Default: 1.",
    }
    # shared: a twin for requests, which the request refers to; the answer's as it was
    assert schemas["Body"]["properties"]["use"] == {"$ref": "#/components/schemas/Use-Input"}
    assert schemas["Use-Input"]["title"] == "UseInput"
    assert "default" not in schemas["Use-Input"]["properties"]["weight"]
    assert schemas["Use"]["properties"]["weight"]["default"] == 1.0
    assert schemas["Answer"]["properties"]["use"] == {"$ref": "#/components/schemas/Use"}


def test_the_served_document_has_no_default_a_request_could_reach() -> None:
    served = json.loads(render())
    job = served["components"]["schemas"]["JobSpec"]["properties"]
    assert "default" not in job["num_images"]
    assert job["stages"]["items"] == {"$ref": "#/components/schemas/Stage-Input"}
    assert served["components"]["schemas"]["LoraUse"]["properties"]["weight"]["default"] == 1.0
