"""The OpenAI Images API's request and answer shapes, as its SDKs read them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.spec import MAX_PROMPT_CHARS, MAX_SEED

OutputFormat = Literal["png", "jpeg", "webp"]
ResponseFormat = Literal["url", "b64_json"]
# OpenAI's size names: "auto" (here: the model's native size) or WxH; any WxH the model's size
# rules allow is taken.
Size = Annotated[str, Field(pattern=r"^(auto|\d{2,4}x\d{2,4})$", examples=["1024x1024"])]


class ImageGenerationRequest(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do: SDKs add new ones over time.
    # NaN and ±Infinity, which Python's JSON parser takes, are no number here.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    model: str | None = Field(
        None,
        description="A registered model (GET /v1/models). OpenAI's own names (dall-e-2, "
        "dall-e-3, gpt-image-1…) and none mean the default one.",
    )
    n: Annotated[int, Field(ge=1, le=4)] = Field(1, description="Pictures to make (up to 4).")
    size: Size = "auto"
    response_format: ResponseFormat = Field(
        "b64_json",
        description="`b64_json` (default: no second request needed) or `url` (the job's PNG, "
        "`GET /jobs/{id}/images/{i}`, with the same key).",
    )
    output_format: OutputFormat = "png"
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = Field(
        None, description="jpeg and webp: quality 0–100 (default 90)."
    )
    quality: str | None = Field(None, description="Accepted and ignored (steps say it here).")
    style: str | None = Field(None, description="Accepted and ignored.")
    background: Literal["auto", "opaque", "transparent"] | None = Field(
        None, description="`transparent` is not served (the models draw opaque pictures)."
    )
    moderation: str | None = Field(None, description="Accepted and ignored.")
    user: str | None = Field(None, description="Accepted and ignored (the API key owns the job).")
    # Extension fields local OpenAI-compatible servers accept (LocalAI, vLLM-Omni):
    negative_prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    steps: Annotated[int, Field(ge=1, le=150)] | None = None
    guidance_scale: Annotated[float, Field(ge=0, le=30)] | None = None


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix seconds when the job was created.")
    data: list[ImageData]
    output_format: OutputFormat
    size: str
    background: Literal["opaque"] = "opaque"
    quality: Literal["auto"] = "auto"


class ModelItem(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(description="`imagegen`, with the model's architecture after a colon.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelItem]


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `authentication_error`, …")
    param: str | None = Field(description="The field at fault, where one is.")
    code: str | None = Field(description="This service's machine type (the `type` of /jobs).")


class OpenAIErrorBody(BaseModel):
    error: OpenAIError
