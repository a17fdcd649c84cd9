"""Request schemas apart from answer schemas, as generated clients need them.

One component schema served both ways breaks openapi-typescript's default output: a field with
a `default` becomes required in TypeScript (its rule spares only request bodies written inline),
so a client had to send `num_images` on `POST /jobs` and 27 fields on `/sdapi/v1/txt2img`. The
server fills those defaults, so in a request they are optional; in an answer they are always
there. So the document keeps the answer schemas as they are, and for requests: a schema only
requests use loses its `default`s (each is kept in its field's description), and one answers use
too gets a `<Name>-Input` twin without them, which request bodies refer to. hey-api and
openapi-python-client read the result as before.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI

_REF = "#/components/schemas/"
INPUT = "-Input"


def install(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            apart(build())  # FastAPI caches it in app.openapi_schema: edited in place once
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def apart(document: dict[str, Any]) -> None:
    """Edit `document` in place: request schemas without defaults, answers' as they were."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    requested = _closure({n for op in operations for n in _refs(op.get("requestBody", {}))},
                         schemas)  # fmt: skip
    answered = _closure({n for op in operations for n in _refs(op.get("responses", {}))}, schemas)
    shared = requested & answered
    twinned = {n for n in shared if _reaches_a_default(n, schemas, shared)}
    for name in twinned:
        twin = schemas[name + INPUT] = copy.deepcopy(schemas[name])
        # Generators name models by title: two of one title clash.
        twin["title"] = f"{twin.get('title', name)}Input"
    for name in (requested - answered) | {n + INPUT for n in twinned}:
        _without_defaults(schemas[name])
        _retarget(schemas[name], twinned)
    for op in operations:
        if "requestBody" in op:
            _retarget(op["requestBody"], twinned)


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF):
                found.add(value.removeprefix(_REF))
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _closure(names: set[str], schemas: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen and name in schemas:
            seen.add(name)
            todo += list(_refs(schemas[name]) - seen)
    return seen


def _has_defaults(schema: dict[str, Any]) -> bool:
    return any("default" in p for p in schema.get("properties", {}).values())


def _reaches_a_default(name: str, schemas: dict[str, Any], shared: set[str]) -> bool:
    return any(_has_defaults(schemas[n]) for n in _closure({name}, schemas) & shared)


def _without_defaults(schema: dict[str, Any]) -> None:
    for field in schema.get("properties", {}).values():
        if "default" in field:
            said = f"Default: {json.dumps(field.pop('default'))}."
            field["description"] = (
                f"{field['description']} {said}" if "description" in field else said
            )


def _retarget(node: Any, twinned: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix(_REF) in twinned:
            node["$ref"] = ref + INPUT
        for key, value in node.items():
            if key != "$ref":
                _retarget(value, twinned)
    elif isinstance(node, list):
        for value in node:
            _retarget(value, twinned)
