"""sd-webui-controlnet's API on the A1111 face, in-process: its units become stages'
ControlNets (hr_option picks the passes), refusals point at the unit, and its routes list what
is served. (tests/stack/test_a1111_client.py runs webuiapi's ControlNetUnit through a worker.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from redis import Redis

from app.a1111.mapping import img2img_spec, txt2img_spec
from app.a1111.schemas import Img2ImgRequest, Txt2ImgRequest
from contract.registry import ModelRegistry
from tests.app.conftest import queued
from tests.helpers import png_b64

IMAGE = png_b64(64, 64)


@pytest.fixture(scope="module")
def registry(registry_file: Path) -> ModelRegistry:
    return ModelRegistry.load(registry_file)


def request(*units: dict[str, Any], **fields: Any) -> Txt2ImgRequest:
    scripts = {"ControlNet": {"args": list(units)}}  # as webuiapi names the script
    return Txt2ImgRequest(prompt="p", width=64, height=64, alwayson_scripts=scripts, **fields)


def test_a_unit_becomes_the_base_stages_controlnet(registry: ModelRegistry) -> None:
    unit = {"model": "demo-sd15-canny [0123abcd]", "module": "canny", "image": IMAGE,
            "weight": 0.6, "resize_mode": "Just Resize", "threshold_a": 50, "threshold_b": 150,
            "guidance_end": 0.8, "pixel_perfect": True, "control_mode": "Balanced"}  # fmt: skip
    [stage] = txt2img_spec(request(unit), "demo-sd15", registry).stages
    [use] = stage.controlnets or []
    assert (use.name, use.module, use.weight, use.resize) == (
        "demo-sd15-canny", "canny", 0.6, "just_resize"
    )  # fmt: skip
    assert (use.low_threshold, use.high_threshold, use.guidance_end) == (50, 150, 0.8)


def test_an_ip_adapter_unit_becomes_the_stages_ip_adapter(registry: ModelRegistry) -> None:
    # as sd-webui-controlnet takes one: a unit whose preprocessor is an ip-adapter one
    look = {"model": "demo-sd15-ip [0123abcd]", "module": "ip-adapter_clip_sd15",
            "image": IMAGE, "weight": 0.5}  # fmt: skip
    canny = {"model": "demo-sd15-canny", "module": "canny", "image": IMAGE}
    [stage] = txt2img_spec(request(canny, look), "demo-sd15", registry).stages
    assert [u.name for u in stage.controlnets or []] == ["demo-sd15-canny"]
    assert [(u.name, u.image, u.weight) for u in stage.ip_adapters or []] == [
        ("demo-sd15-ip", IMAGE, 0.5)
    ]  # fmt: skip


def test_an_ip_adapter_unit_of_another_architecture_is_refused_at_the_unit(
    client: TestClient, redis: Redis
) -> None:
    look = {"model": "demo-sd15-ip", "module": "ip-adapter-auto", "image": IMAGE}
    canny = {"model": "demo-sdxl-canny", "image": IMAGE}
    body = {"prompt": "p", "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "demo-sdxl"},
            "alwayson_scripts": {"controlnet": {"args": [canny, look]}}}  # fmt: skip
    refused = client.post("/sdapi/v1/txt2img", json=body)
    assert refused.status_code == 422
    [item] = refused.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "ip_adapter_architecture_mismatch", ["body", "alwayson_scripts", "controlnet", "args", 1]
    )  # fmt: skip
    assert "demo-sdxl-ip" in item["msg"]
    assert queued(redis) == 0


def test_disabled_units_and_model_none_steer_nothing(registry: ModelRegistry) -> None:
    off = {"model": "demo-sd15-canny", "image": IMAGE, "enabled": False}
    none = {"model": "None", "image": IMAGE}
    [stage] = txt2img_spec(request(off, none), "demo-sd15", registry).stages
    assert stage.controlnets is None


def test_hr_option_puts_each_unit_on_its_pass_of_its_architecture(registry: ModelRegistry) -> None:
    sd15 = {"model": "demo-sd15-canny", "image": IMAGE, "hr_option": "Low res only"}
    flux = {"model": "demo-flux-canny", "image": IMAGE, "hr_option": "High res only"}
    hires = {"enable_hr": True, "hr_checkpoint_name": "demo-flux", "hr_upscaler": "Lanczos"}
    base, high = txt2img_spec(request(sd15, flux, **hires), "demo-sd15", registry).stages
    assert [u.name for u in base.controlnets or []] == ["demo-sd15-canny"]
    assert [u.name for u in high.controlnets or []] == ["demo-flux-canny"]


def test_img2img_units_without_an_image_take_the_init_image(registry: ModelRegistry) -> None:
    unit = {"model": "demo-sd15-canny", "module": "canny"}
    body = Img2ImgRequest(prompt="p", width=64, height=64, init_images=[IMAGE],
                          alwayson_scripts={"controlnet": {"args": [unit]}})  # fmt: skip
    [stage] = img2img_spec(body, "demo-sd15", registry).stages
    assert (stage.controlnets or [])[0].image == IMAGE


@pytest.mark.parametrize(
    ("unit", "field", "says"),
    [
        ({"model": "control_v11p_sd15_depth", "image": IMAGE}, "model", "demo-sd15-canny ["),
        ({"model": "demo-sd15-canny", "image": IMAGE, "module": "depth_midas"}, "module", "canny"),
        ({"model": "demo-sd15-canny", "image": IMAGE, "control_mode": "ControlNet is more "
          "important"}, "control_mode", "Balanced"),
        ({"model": "ip-adapter_sd15", "image": IMAGE, "module": "ip-adapter-auto"}, "model",
         "IP-Adapters in /controlnet/model_list: demo-sd15-ip ["),
        ({"model": "demo-sd15-ip", "image": IMAGE, "module": "ip-adapter-auto",
          "guidance_end": 0.5}, "guidance_end", "whole schedule"),
        ({"model": "demo-sd15-ip", "image": IMAGE, "module": "ip-adapter-auto",
          "guidance_start": "0.2"}, "guidance_start", "whole schedule"),
        ({"model": "demo-sd15-ip", "image": IMAGE, "module": "none"}, "model",
         "is an IP-Adapter: send it with module ip-adapter-auto"),
    ],
)  # fmt: skip
def test_what_is_not_served_is_refused_at_the_units_field(
    registry: ModelRegistry, unit: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(RequestValidationError) as refused:
        txt2img_spec(request({"enabled": True}, unit), "demo-sd15", registry)
    [error] = refused.value.errors()
    assert error["loc"] == ("body", "alwayson_scripts", "ControlNet", "args", 1, field)
    assert says in error["msg"]


def test_a_unit_of_another_architecture_is_refused_at_the_unit(
    client: TestClient, redis: Redis
) -> None:
    body = {"prompt": "p", "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "demo-sdxl"},
            "alwayson_scripts": {"controlnet": {"args": [{"model": "demo-sd15-canny",
                                                          "image": IMAGE}]}}}  # fmt: skip
    refused = client.post("/sdapi/v1/txt2img", json=body)
    assert refused.status_code == 422
    [item] = refused.json()["detail"]
    assert (item["type"], item["loc"]) == (
        "controlnet_architecture_mismatch", ["body", "alwayson_scripts", "controlnet", "args", 0]
    )  # fmt: skip
    assert queued(redis) == 0


def test_the_extensions_routes_list_what_is_served(client: TestClient) -> None:
    assert client.get("/controlnet/version").json() == {"version": 2}
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert [m.split(" [")[0] for m in models] == [
        "demo-flux-canny",
        "demo-sd15-canny",
        "demo-sd15-ip",  # the extension lists IP-Adapters among its models
        "demo-sdxl-canny",
        "demo-sdxl-ip",
    ]
    assert all(m.endswith("]") for m in models)  # `name [hash]`, as the extension lists them
    modules = client.get("/controlnet/module_list").json()["module_list"]
    assert modules == ["none", "canny", "ip-adapter-auto"]
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert types["Canny"]["default_option"] == "canny"
    assert types["All"]["model_list"] == ["None", *models]
    assert [m.split(" [")[0] for m in types["IP-Adapter"]["model_list"]] == [
        "None", "demo-sd15-ip", "demo-sdxl-ip"
    ]  # fmt: skip
