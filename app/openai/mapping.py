"""An OpenAI Images request as a job: its model (or the default one), its size, its pictures;
and a job's refusals pointed at the OpenAI fields (`size` for the width and height, `n` for the
number of pictures, `image` for the init image)."""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected

# The model names OpenAI's own clients default to: they mean this service's default model.
OPENAI_MODELS = ("dall-e-", "gpt-image-")
_FIELDS: dict[str, str] = {
    "width": "size", "height": "size", "num_images": "n", "init_image": "image",
    "prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "mask": "mask",
    "invert_mask": "mask",
}  # fmt: skip
_STAGE_FIELDS = {"model": "model", "steps": "steps", "guidance_scale": "guidance_scale"}


def refuse(field: str, msg: str, value: object = None) -> NoReturn:
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": msg, "input": value}]
    )


def model_for(name: str | None, registry: ModelRegistry) -> str:
    """The registered text-to-image model a request means."""
    if not name or name.startswith(OPENAI_MODELS):
        default = registry.a1111_checkpoint
        if default is None:
            refuse("model", "no registered model draws from text; name one (GET /v1/models)")
        return default
    if name not in drawing(registry):
        listed = ", ".join(drawing(registry)) or "none"
        refuse("model", f"model {name!r} is not served here; GET /v1/models lists: {listed}", name)
    return name


def drawing(registry: ModelRegistry) -> list[str]:
    """The models that draw from text, then the presets (each a chain under one name)."""
    models = [n for n in registry.names() if registry.models[n].text_to_image]
    return [*models, *sorted(registry.presets)]


def first_model(name: str, registry: ModelRegistry) -> str:
    """The model a request's first stage runs: the model, or a preset's first."""
    preset = registry.presets.get(name)
    return name if preset is None else preset.stages[0].label


def size_of(size: str, model: str, registry: ModelRegistry) -> tuple[int, int]:
    """`auto` is the (first) model's native size; `WxH` as asked (the job rules check its
    multiple)."""
    if size == "auto":
        return registry.models[first_model(model, registry)].arch.native_size
    width, _, height = size.partition("x")
    return int(width), int(height)


def job_body(
    model: str,
    size: tuple[int, int],
    asked: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    """The job spec's body for a generation (or, with `init_image`, an edit) request: `asked`
    holds its prompt, `n` and the extension fields it sent (None: not sent)."""
    stage = {"model": model}
    stage.update({k: asked[k] for k in ("steps", "guidance_scale") if asked.get(k) is not None})
    body: dict[str, Any] = {
        "prompt": asked["prompt"], "num_images": asked["n"], "width": size[0],
        "height": size[1], "stages": [stage], **fields,
    }  # fmt: skip
    for field in ("negative_prompt", "seed"):
        if asked.get(field) is not None:
            body[field] = asked[field]
    return body


def spec_of(body: dict[str, Any]) -> JobSpec:
    """The job spec, or the request's 400 at its OpenAI field (a size under the minimum is
    `size`'s)."""
    try:
        return JobSpec.model_validate(body)
    except ValidationError as invalid:
        errors = [
            {**error, "loc": ("body", *_openai_loc(tuple(error["loc"])))}
            for error in invalid.errors()
        ]
        raise RequestValidationError(errors) from None


def in_openai_terms(rejected: JobRejected) -> JobRejected:
    """The job's violations at the OpenAI request's fields."""
    return JobRejected(
        [dataclasses.replace(v, loc=_openai_loc(v.loc)) for v in rejected.violations]
    )


def _openai_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    if len(loc) >= 3 and loc[0] == "stages":
        return (_STAGE_FIELDS.get(str(loc[2]), str(loc[2])),)
    return (_FIELDS.get(str(loc[0]), str(loc[0])),) if loc else ()
