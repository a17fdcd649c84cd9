"""The A1111 face driven by `webuiapi`, an A1111 API client from PyPI (not code written here),
against the running stack: txt2img, hires fix through another checkpoint (SD1.5 -> Flux, pixel),
refiner, img2img, inpainting, a latent upscaler refused across latent spaces, progress while
running, interrupt, and Extras upscaling."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw
from webuiapi import ControlNetUnit, WebUIApi, WebUIApiResult

from jobs.queues import pool_queue
from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

SD15 = {"sd_model_checkpoint": "demo-sd15"}


@pytest.fixture
def api(stack: Stack) -> Iterator[WebUIApi]:
    # The client's defaults, but a sampler every demo model has and few steps (CPU).
    client = WebUIApi(host="127.0.0.1", port=stack.port, sampler="Euler", steps=2)
    yield client
    client.session.close()


def parameters(result: WebUIApiResult, index: int = 0) -> str:
    """The `parameters` text of a returned PNG, which must be what `info` says it is."""
    text = str(result.images[index].info["parameters"])
    assert text == result.info["infotexts"][index]
    return text


def test_txt2img_answers_pngs_carrying_a1111s_parameters(api: WebUIApi, stack: Stack) -> None:
    result = api.txt2img(
        prompt="a lighthouse", negative_prompt="fog", seed=5, width=64, height=64,
        batch_size=2, override_settings=SD15,
    )  # fmt: skip
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert parameters(result, 1) == (
        "a lighthouse\nNegative prompt: fog\n"
        "Steps: 2, Sampler: Euler, CFG scale: 7.0, Seed: 6, Size: 64x64, Model: demo-sd15"
    )
    assert result.info["all_seeds"] == [5, 6]
    # The same job, through the same queue, owned by the caller: it is in /jobs too.
    with stack.client() as client:
        job = client.get(f"/jobs/{result.info['imagegen_job_id']}").json()
    assert job["status"] == "succeeded"


def test_clip_skip_reads_the_prompt_from_an_earlier_layer_and_says_so(api: WebUIApi) -> None:
    def draw(**settings: int) -> WebUIApiResult:
        return api.txt2img(
            prompt="a lighthouse", seed=5, width=64, height=64,
            override_settings={**SD15, **settings},
        )  # fmt: skip

    last, skipped = draw(), draw(CLIP_stop_at_last_layers=2)
    assert skipped.images[0].tobytes() != last.images[0].tobytes()
    assert parameters(skipped).endswith("Model: demo-sd15, Clip skip: 2")
    assert (last.info["clip_skip"], skipped.info["clip_skip"]) == (1, 2)


def test_sd_vae_decodes_with_the_listed_vae_and_the_png_says_which(api: WebUIApi) -> None:
    listed = [v["model_name"] for v in api.get_sd_vae()]
    assert listed == ["demo-sd15-vae", "demo-sdxl-vae"]

    def draw(vae: str) -> WebUIApiResult:
        return api.txt2img(
            prompt="a lighthouse", seed=5, width=64, height=64,
            override_settings={**SD15, "sd_vae": vae},
        )  # fmt: skip

    own, other, own_again = draw("Automatic"), draw(listed[0]), draw("None")
    assert other.images[0].tobytes() != own.images[0].tobytes()
    assert own_again.images[0].tobytes() == own.images[0].tobytes()
    assert re.search(r"Model: demo-sd15, VAE hash: [0-9a-f]{10}, VAE: demo-sd15-vae$",
                     parameters(other))  # fmt: skip
    with pytest.raises(RuntimeError) as refused:
        draw("demo-sdxl-vae")  # an SDXL VAE on an SD1.5 checkpoint
    assert "vae_latent_space_mismatch" in str(refused.value)


def test_an_embedding_named_in_the_prompt_is_applied_and_hashed_as_a1111_does(
    api: WebUIApi,
) -> None:
    listed = api.get_embeddings()
    assert (list(listed["loaded"]), list(listed["skipped"])) == (
        ["demo-sd15-emb"],
        ["demo-sdxl-emb"],
    )

    def draw(prompt: str) -> WebUIApiResult:
        return api.txt2img(prompt=prompt, seed=5, width=64, height=64, override_settings=SD15)

    plain, named = draw("a lighthouse"), draw("a lighthouse, demo-sd15-emb")
    assert named.images[0].tobytes() != plain.images[0].tobytes()
    assert re.search(r'TI hashes: "demo-sd15-emb: [0-9a-f]{12}"$', parameters(named))
    with pytest.raises(RuntimeError) as refused:
        draw("a lighthouse, demo-sdxl-emb")  # SDXL's, to an SD1.5 checkpoint
    assert "embedding_architecture_mismatch" in str(refused.value)


def test_webuiapis_controlnet_unit_steers_txt2img(api: WebUIApi) -> None:
    models = api.controlnet_model_list()
    assert [m.split(" [")[0] for m in models] == [
        "demo-flux-canny",
        "demo-sd15-canny",
        "demo-sd15-ip",
        "demo-sdxl-canny",
        "demo-sdxl-ip",
    ]
    square = Image.new("RGB", (64, 64), (0, 0, 0))
    square.paste((255, 255, 255), (16, 16, 48, 48))

    def draw(*units: ControlNetUnit) -> WebUIApiResult:
        # A fresh alwayson_scripts each call: webuiapi writes the units into its argument,
        # whose default is one dict shared by every later call in the process.
        return api.txt2img(prompt="a lighthouse", seed=5, width=64, height=64,
                           override_settings=SD15, controlnet_units=list(units),
                           alwayson_scripts={})  # fmt: skip

    sd15 = next(m for m in models if m.startswith("demo-sd15-canny"))
    plain = draw()
    steered = draw(ControlNetUnit(image=square, module="canny", model=sd15,
                                  threshold_a=100, threshold_b=200))  # fmt: skip
    assert steered.images[0].tobytes() != plain.images[0].tobytes()
    assert f'ControlNet 0: "Module: canny, Model: {sd15}, Weight: 1.0' in parameters(steered)
    with pytest.raises(RuntimeError) as refused:  # an SDXL ControlNet on an SD1.5 checkpoint
        draw(ControlNetUnit(image=square, model="demo-sdxl-canny"))
    assert "controlnet_architecture_mismatch" in str(refused.value)
    # An IP-Adapter is a unit too, with one of the extension's ip-adapter preprocessors.
    ip15 = next(m for m in models if m.startswith("demo-sd15-ip"))
    looked = draw(ControlNetUnit(image=square, module="ip-adapter-auto", model=ip15))
    assert looked.images[0].tobytes() != plain.images[0].tobytes()
    assert f'ControlNet 0: "Module: ip-adapter-auto, Model: {ip15}, Weight: 1.0' in parameters(
        looked
    )
    with pytest.raises(RuntimeError) as refused:  # an SDXL IP-Adapter on an SD1.5 checkpoint
        draw(ControlNetUnit(image=square, module="ip-adapter-auto", model="demo-sdxl-ip"))
    assert "ip_adapter_architecture_mismatch" in str(refused.value)


def test_hires_fix_through_flux_hands_over_pixels(api: WebUIApi) -> None:
    result = api.txt2img(
        prompt="a castle", seed=1, width=64, height=64, override_settings=SD15,
        enable_hr=True, hr_checkpoint_name="demo-flux", hr_upscaler="Lanczos", hr_scale=2,
        hr_second_pass_steps=3, hr_sampler_name="Euler", denoising_strength=0.5,
    )  # fmt: skip
    [image] = result.images
    assert image.size == (128, 128)
    assert parameters(result).endswith(
        "Denoising strength: 0.5, Hires upscale: 2.0, Hires steps: 3, Hires upscaler: Lanczos, "
        "Hires checkpoint: demo-flux"
    )


def test_an_upscaler_model_listed_by_a1111s_route_serves_hr_upscaler(api: WebUIApi) -> None:
    listed = {u["name"]: u for u in api.get_upscalers()}
    assert listed["esrgan-4x"]["model_path"] == "esrgan-4x.safetensors"
    result = api.txt2img(
        prompt="a castle", seed=1, width=64, height=64, override_settings=SD15,
        enable_hr=True, hr_checkpoint_name="demo-flux", hr_upscaler="esrgan-4x", hr_scale=2,
        hr_second_pass_steps=2, denoising_strength=0.5,
    )  # fmt: skip
    assert result.images[0].size == (128, 128)
    assert "Hires upscaler: esrgan-4x" in parameters(result)


def test_a_latent_upscaler_across_latent_spaces_is_refused_in_a1111_terms(api: WebUIApi) -> None:
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(
            prompt="a castle", width=64, height=64, override_settings=SD15, enable_hr=True,
            hr_checkpoint_name="demo-flux", hr_upscaler="Latent",
        )  # fmt: skip
    status, body = refused.value.args
    assert status == 422
    [item] = json.loads(body)["detail"]
    assert item["type"] == "latent_space_mismatch"
    assert item["loc"] == ["body", "hr_upscaler"]
    assert "pick a pixel upscaler" in item["msg"]


def test_the_sdxl_refiner_takes_over_at_the_switch(api: WebUIApi) -> None:
    # webuiapi's txt2img has no refiner arguments; its custom_post sends A1111's fields as given.
    payload = {
        "prompt": "a harbour", "seed": 2, "width": 64, "height": 64, "steps": 4,
        "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": "demo-sdxl"},
        "refiner_checkpoint": "demo-sdxl-refiner", "refiner_switch_at": 0.5,
    }  # fmt: skip
    result = api.custom_post("txt2img", payload, baseurl=True)
    assert parameters(result).endswith("Refiner: demo-sdxl-refiner, Refiner switch at: 0.5")


def test_img2img_renoises_the_picture_it_is_given(api: WebUIApi) -> None:
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    result = api.img2img(
        images=[picture], prompt="a red wall", seed=3, width=64, height=64, steps=4,
        denoising_strength=0.5, override_settings=SD15,
    )  # fmt: skip
    assert result.images[0].size == (64, 64)
    assert "Denoising strength: 0.5" in parameters(result)
    assert result.parameters["init_images"] is None  # as A1111 echoes a request


def test_img2img_resize_mode_3_upscales_the_pictures_latents(api: WebUIApi) -> None:
    picture = Image.new("RGB", (32, 48), (200, 30, 30))
    made = {
        mode: api.img2img(
            images=[picture], prompt="a red wall", seed=3, width=64, height=96, steps=4,
            denoising_strength=0.5, resize_mode=mode, override_settings=SD15,
        ).images[0]
        for mode in (0, 3)
    }  # fmt: skip
    assert made[3].size == (64, 96)
    # The same stretch, once in pixels and once in latents: two pictures.
    difference = np.abs(np.asarray(made[3], int) - np.asarray(made[0], int))
    assert difference.mean() > 1


def test_webuiapi_inpaints_only_the_masked_part(api: WebUIApi) -> None:
    rng = np.random.default_rng(2)
    picture = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((80, 16, 95, 31), fill=255)
    # webuiapi's defaults: fill, only masked (padding 0), mask blur 4.
    result = api.img2img(
        images=[picture], mask_image=mask, prompt="a window", seed=3, width=128, height=128,
        steps=4, denoising_strength=0.9, override_settings=SD15,
    )  # fmt: skip
    out = np.asarray(result.images[0].convert("RGB"), np.int16)
    original = np.asarray(picture, np.int16)
    far = np.ones((128, 128), bool)
    far[16 - 10 : 32 + 10, 80 - 10 : 96 + 10] = False  # the square and its blur's reach
    assert (out[far] == original[far]).all()
    assert np.abs(out[16:32, 80:96] - original[16:32, 80:96]).mean() > 5
    assert "Mask blur: 4, Masked content: fill" in parameters(result)
    assert result.parameters["mask"] is None  # as A1111 echoes a request


def test_an_inpainting_checkpoint_inpaints_through_webuiapi(api: WebUIApi) -> None:
    rng = np.random.default_rng(4)
    picture = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    result = api.img2img(
        images=[picture], mask_image=mask, prompt="a window", seed=3, width=64, height=64,
        steps=4, denoising_strength=0.75, inpainting_fill=1, inpaint_full_res=False,
        override_settings={"sd_model_checkpoint": "demo-sd15-inpainting"},
    )  # fmt: skip
    out = np.asarray(result.images[0].convert("RGB"), np.int16)
    original = np.asarray(picture, np.int16)
    far = np.ones((64, 64), bool)
    far[24 - 10 : 40 + 10, 24 - 10 : 40 + 10] = False
    assert (out[far] == original[far]).all()
    assert "Model: demo-sd15-inpainting" in parameters(result)
    with pytest.raises(RuntimeError, match="inpainting checkpoint"):  # no mask: refused
        api.txt2img(prompt="p", width=64, height=64,
                    override_settings={"sd_model_checkpoint": "demo-sd15-inpainting"})  # fmt: skip


def test_options_choose_the_checkpoint_and_the_lists_name_what_exists(api: WebUIApi) -> None:
    api.set_options({"sd_model_checkpoint": "demo-sdxl [0123abcd]"})  # an A1111 title
    assert api.get_options()["sd_model_checkpoint"] == "demo-sdxl"
    assert "demo-flux" in api.util_get_model_names()
    assert {"Euler", "Euler a", "DPM++ 2M"} <= set(api.util_get_sampler_names())
    assert "Latent (bicubic)" in [m["name"] for m in api.get_latent_upscale_modes()]
    api.set_options({"sd_model_checkpoint": "demo-sd15"})


def test_progress_while_running_and_interrupt(api: WebUIApi) -> None:
    done: dict[str, Any] = {}

    def generate() -> None:
        done["result"] = api.txt2img(
            prompt="slow", width=256, height=256, steps=150, override_settings=SD15
        )

    worker = threading.Thread(target=generate)
    worker.start()
    watcher = WebUIApi(host="127.0.0.1", port=api.baseurl.split(":")[2].split("/")[0])
    deadline = time.monotonic() + 60
    progress = watcher.get_progress()
    while progress["state"]["sampling_step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        progress = watcher.get_progress()
    assert progress["state"]["sampling_steps"] == 150
    assert 0 < progress["progress"] < 1
    assert progress["eta_relative"] > 0
    watcher.interrupt()
    worker.join(60)
    result = done["result"]
    assert result.images == []
    assert result.info["interrupted"] is True
    assert watcher.get_progress()["state"]["job_count"] == 0  # nothing current any more


def test_a1111_lora_tags_in_the_prompt_apply_the_lora(api: WebUIApi) -> None:
    result = api.txt2img(
        prompt="a lighthouse <lora:detail-sd15:0.5>", seed=7, width=64, height=64,
        override_settings=SD15,
    )  # fmt: skip
    assert parameters(result).startswith("a lighthouse <lora:detail-sd15:0.5>\n")
    assert "Lora hashes:" in parameters(result)


def test_a1111s_schedule_and_legacy_sampler_names_draw_and_are_written_back(
    api: WebUIApi,
) -> None:
    # SillyTavern's default schedule, and a combined name from before A1111 1.9
    job = {
        "prompt": "a lighthouse",
        "seed": 2,
        "width": 64,
        "height": 64,
        "override_settings": SD15,
    }
    normal = api.txt2img(**job, sampler_name="Euler", scheduler="normal")
    assert "Sampler: Euler, Schedule type: Normal," in parameters(normal)
    combined = api.txt2img(**job, sampler_name="DPM++ 2M Karras")
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in parameters(combined)
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(**job, sampler_name="Euler", scheduler="align_your_steps")
    assert "has no equivalent here" in str(refused.value)


def test_webuiapis_list_and_info_calls_get_what_this_service_has(api: WebUIApi) -> None:
    assert [lora["name"] for lora in api.get_loras()] == ["detail-sd15"]
    assert [m["name"] for m in api.get_realesrgan_models()] == [
        "compact-2x", "esrgan-4x", "swinir-2x"
    ]  # fmt: skip
    assert api.get_prompt_styles() == api.get_face_restorers() == api.get_hypernetworks() == []
    assert api.get_cmd_flags()["api"] is True
    assert api.get_memory()["ram"]["total"] > 0
    assert api.refresh_checkpoints() is None
    # A picture this service made, read back as A1111 reads it
    made = api.txt2img(prompt="a lighthouse", seed=9, width=64, height=64,
                       override_settings=SD15)  # fmt: skip
    read = api.png_info(made.images[0])
    assert read.info == parameters(made)
    assert (read.parameters["Prompt"], read.parameters["Seed"]) == ("a lighthouse", "9")
    with pytest.raises(RuntimeError, match="501"):
        api.interrogate(made.images[0])


def test_webuiapis_extras_upscale_pictures_as_jobs_with_the_registrys_upscalers(
    api: WebUIApi, stack: Stack
) -> None:
    rng = np.random.default_rng(2)
    picture = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    one = api.extra_single_image(picture, upscaler_1="esrgan-4x", upscaling_resize=2)
    assert one.images[0].size == (160, 128)
    # A1111 reads the factor as a float, and writes it so.
    assert one.info == "<p>Postprocess upscale by: 2.0, Postprocess upscaler: esrgan-4x</p>"
    # To a size, cropped from the middle, for each picture of a batch, in order.
    other = Image.fromarray(rng.integers(0, 256, (96, 64, 3), dtype=np.uint8))
    batch = api.extra_batch_images(
        [picture, other], resize_mode=1, upscaling_resize_w=128, upscaling_resize_h=128,
        upscaler_1="Lanczos",
    )  # fmt: skip
    assert [im.size for im in batch.images] == [(128, 128), (128, 128)]
    assert batch.info == "<p>Postprocess upscale to: 128x128, Postprocess upscaler: Lanczos</p>"
    # Lanczos covering 128 x 128 from 80 x 64: what this picture is at 160 x 128, its middle.
    lanczos = picture.resize((160, 128), Image.Resampling.LANCZOS).crop((16, 0, 144, 128))
    assert np.array_equal(np.asarray(batch.images[0].convert("RGB")), np.asarray(lanczos))
    with pytest.raises(RuntimeError, match="face restoration is not served"):
        api.extra_single_image(picture, gfpgan_visibility=0.5)
    with pytest.raises(RuntimeError, match="upscaler_1"):
        api.extra_single_image(picture, upscaler_1="R-ESRGAN 4x+")


def test_a_batch_with_a_picture_admission_refuses_leaves_nothing_queued(stack: Stack) -> None:
    good = io.BytesIO()
    Image.new("RGB", (80, 64), (10, 200, 30)).save(good, format="PNG")
    images = [
        {"data": base64.b64encode(good.getvalue()).decode(), "name": "a"},
        {"data": base64.b64encode(b"not a picture").decode(), "name": "b"},
    ]
    queue = pool_queue(stack.redis, "default")
    slow = {"prompt": "slow", "width": 384, "height": 384,
            "stages": [{"model": "demo-sd15", "steps": 150}]}  # fmt: skip
    with stack.client() as client:
        busy = client.post("/jobs", json=slow).json()["id"]  # the worker is busy meanwhile
        while client.get(f"/jobs/{busy}").json()["status"] == "queued":
            time.sleep(0.05)
        try:
            response = client.post("/sdapi/v1/extra-batch-images", json={"imageList": images})
            assert response.status_code == 422
            [item] = response.json()["detail"]
            assert item["loc"] == ["body", "imageList", 1, "data"]
            # The first picture's job was queued before the second was refused: canceled, it
            # does not wait in the queue to run for an answer that is not coming.
            assert queue.count == 0
        finally:
            client.post(f"/jobs/{busy}/cancel")
