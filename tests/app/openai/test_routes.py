"""The OpenAI face in-process, with the SDK's own client (no worker: what is refused before a
job is queued, and the model list; tests/stack/test_openai_client.py runs jobs through it)."""

from __future__ import annotations

import base64

import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from redis import Redis

from tests.app.conftest import ALICE, queued
from tests.helpers import png_b64


def sdk(client: TestClient, key: str) -> OpenAI:
    # TestClient is an httpx.Client: the SDK runs its own code against the app in-process.
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def test_the_sdk_lists_the_models_that_draw_from_text(secured: TestClient) -> None:
    models = sdk(secured, ALICE).models.list()
    owned = {m.id: m.owned_by for m in models}
    assert owned["demo-sd15"] == "imagegen:sd15"
    assert "demo-sdxl-refiner" not in owned


def test_a_wrong_key_is_the_sdks_authentication_error(secured: TestClient) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(secured, "wrong").images.generate(prompt="p")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "65x64"}, "size"),
        ({"size": "64x64", "background": "transparent"}, "background"),
        ({"size": "64x64", "response_format": "url", "output_format": "webp"}, "output_format"),
        ({"model": "demo-sdxl-refiner"}, "model"),
    ],
)
def test_what_cannot_be_made_is_refused_at_its_field_before_anything_is_queued(
    client: TestClient, redis: Redis, fields: dict[str, str], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(client, "any").images.generate(prompt="p", model=fields.pop("model", "demo-sd15"),
                                           **fields)  # type: ignore[arg-type]  # fmt: skip
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["param"] == param
    assert queued(redis) == 0


def test_an_edit_takes_one_picture(client: TestClient, redis: Redis) -> None:
    picture = base64.b64decode(png_b64(64, 64))
    edits = sdk(client, "any").images
    with pytest.raises(openai.BadRequestError) as two:
        edits.edit(image=[("a.png", picture, "image/png"), ("b.png", picture, "image/png")],
                   prompt="p")  # fmt: skip
    assert isinstance(two.value.body, dict)
    assert two.value.body["param"] == "image"
    response = client.post("/v1/images/edits", data={"prompt": "p"},
                           files={"image": ("a.png", b"not a picture", "image/png")})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"
    assert queued(redis) == 0


def test_an_edits_mask_of_another_size_is_a_bad_request_at_mask(
    client: TestClient, redis: Redis
) -> None:
    picture = base64.b64decode(png_b64(64, 64))
    mask = base64.b64decode(png_b64(32, 32))
    with pytest.raises(openai.BadRequestError) as wrong:
        sdk(client, "any").images.edit(image=("a.png", picture, "image/png"), prompt="p",
                                       mask=("m.png", mask, "image/png"))  # fmt: skip
    assert isinstance(wrong.value.body, dict)
    assert wrong.value.body["param"] == "mask"
    assert "mask is 32x32 but init_image is 64x64" in wrong.value.body["message"]
    assert queued(redis) == 0
