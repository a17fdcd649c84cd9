"""Result PNGs carry A1111's `parameters` text and the normalized spec."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_parsers.data import Generators, PromptInfo

from contract.checked import CheckedSpec
from contract.resamplers import Upscaler
from contract.spec import ControlNetUse, Handoff, IpAdapterUse
from workers.segments.png import (
    SPEC_CHUNK,
    FileHashes,
    encode_png,
    parameters_text,
    sampler_name,
)

HIRES = CheckedSpec.model_validate(
    {
        "prompt": "a castle",
        "negative_prompt": "blurry",
        "seed": 3,
        "width": 256,
        "height": 256,
        "timeout_s": 600,
        "stages": [
            {"model": "sd", "steps": 20, "guidance_scale": 7.0},
            {
                "model": "flux",
                "mode": "hires",
                "handoff": "pixel",
                "scale": 2.0,
                "steps": 8,
                "guidance_scale": 3.5,
                "denoise": 0.5,
                "upscaler": "lanczos",
                "width": 512,
                "height": 512,
            },
        ],
    }
)


def test_parameters_read_as_a1111_writes_them() -> None:
    prompt, negative, settings = parameters_text(HIRES, 1, "Euler").split("\n")
    assert prompt == "a castle"
    assert negative == "Negative prompt: blurry"
    assert settings == (
        "Steps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 4, Size: 256x256, Model: sd, "
        "Denoising strength: 0.5, Hires upscale: 2.0, Hires steps: 8, Hires upscaler: Lanczos, "
        "Hires checkpoint: flux"
    )


def test_a_chosen_schedule_and_hires_sampler_are_written_as_a1111_writes_them() -> None:
    base, hires = HIRES.stages
    spec = HIRES.model_copy(
        update={
            "stages": [
                base.model_copy(update={"sampler": "DPM++ 2M", "scheduler": "karras"}),
                hires.model_copy(update={"sampler": "Euler"}),
            ]
        }
    )
    settings = parameters_text(spec, 0, "DPM++ 2M").split("\n")[2]
    assert settings.startswith("Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale")
    assert "Hires sampler: Euler, Hires steps: 8" in settings


def test_the_png_carries_both_chunks_and_the_same_pixels() -> None:
    picture = Image.new("RGB", (8, 8), (10, 20, 30))
    data = encode_png(picture, "p\nSteps: 1", HIRES.model_dump_json())
    decoded = Image.open(io.BytesIO(data))
    assert decoded.text["parameters"] == "p\nSteps: 1"
    assert CheckedSpec.model_validate(json.loads(decoded.text[SPEC_CHUNK])) == HIRES
    assert decoded.convert("RGB").getpixel((0, 0)) == (10, 20, 30)
    assert encode_png(picture) == encode_png(picture)  # deterministic bytes


def test_schedulers_are_named_as_sd_tools_name_them() -> None:
    assert sampler_name("EulerAncestralDiscreteScheduler") == "Euler a"
    assert sampler_name("SomethingNew") == "SomethingNew"


def read_back(spec: CheckedSpec, hashes: FileHashes | None = None) -> PromptInfo:
    """What a third-party A1111 metadata reader (sd-parsers) makes of our PNG."""
    png = encode_png(Image.new("RGB", (8, 8)), parameters_text(spec, 0, "Euler", hashes))
    info = ParserManager().parse(Image.open(io.BytesIO(png)))
    assert info is not None
    assert info.generator is Generators.AUTOMATIC1111
    return info


def test_an_a1111_reader_reads_hires_fields_back() -> None:
    explicit = HIRES.model_copy(
        update={
            "stages": [
                HIRES.stages[0],
                HIRES.stages[1].model_copy(
                    update={
                        "scale": None,  # the client asked for 512x512 itself
                        "prompt": "a castle at golden hour",
                        "negative_prompt": "watermark",
                        "upscaler": Upscaler.LATENT_BICUBIC,
                        "handoff": Handoff.LATENT,
                    }
                ),
            ]
        }
    )
    info = read_back(explicit)
    [sampler] = info.samplers
    assert sampler.name == "Euler"
    assert sampler.parameters == {"cfg_scale": "7.0", "seed": "3", "steps": "20"}
    assert [p.value for p in sampler.prompts] == ["a castle"]
    assert [p.value for p in sampler.negative_prompts] == ["blurry"]
    assert info.metadata["Hires resize"] == "512x512"
    assert "Hires upscale" not in info.metadata
    assert info.metadata["Hires upscaler"] == "Latent (bicubic)"
    assert info.metadata["Hires checkpoint"] == "flux"
    assert info.metadata["Hires prompt"] == "a castle at golden hour"
    assert info.metadata["Hires negative prompt"] == "watermark"


def test_values_with_commas_or_colons_are_quoted_as_a1111_quotes_them() -> None:
    # sd-parsers 0.6 splits on every comma, so it cannot read these back; A1111's own reader
    # takes a JSON-quoted value whole.
    spec = HIRES.model_copy(
        update={
            "stages": [
                HIRES.stages[0],
                HIRES.stages[1].model_copy(update={"prompt": "a castle, golden hour"}),
            ]
        }
    )
    settings = parameters_text(spec, 0, "Euler").split("\n")[-1]
    assert 'Hires prompt: "a castle, golden hour"' in settings


def test_the_hires_checkpoint_is_written_only_when_it_differs() -> None:
    same = HIRES.model_copy(
        update={"stages": [HIRES.stages[0], HIRES.stages[1].model_copy(update={"model": "sd"})]}
    )
    info = read_back(same)
    assert "Hires checkpoint" not in info.metadata
    assert info.metadata["Hires upscale"] == "2.0"


def test_clip_skip_is_written_as_a1111_writes_it_and_read_back() -> None:
    skipped = HIRES.model_copy(
        update={"stages": [HIRES.stages[0].model_copy(update={"clip_skip": 2}), HIRES.stages[1]]}
    )
    settings = parameters_text(skipped, 0, "Euler").split("\n")[-1]
    assert "Denoising strength: 0.5, Clip skip: 2, Hires upscale" in settings
    assert read_back(skipped).metadata["Clip skip"] == "2"
    assert "Clip skip" not in parameters_text(HIRES, 0, "Euler")  # A1111's 1 is not written


def test_the_vae_is_written_as_a1111_writes_it_with_its_hash_and_read_back() -> None:
    decoded = HIRES.model_copy(
        update={"stages": [HIRES.stages[0].model_copy(update={"vae": "sd-mse"}), HIRES.stages[1]]}
    )
    hashes = FileHashes(vaes={"sd-mse": "0123456789ab"})
    settings = parameters_text(decoded, 0, "Euler", hashes).split("\n")[-1]
    # after the model, its 10-digit short hash first, as A1111's create_infotext orders them
    assert "Model: sd, VAE hash: 0123456789, VAE: sd-mse, Denoising strength" in settings
    info = read_back(decoded, hashes)
    assert (info.metadata["VAE"], info.metadata["VAE hash"]) == ("sd-mse", "0123456789")
    assert "VAE" not in parameters_text(HIRES, 0, "Euler")  # the model's own is not written


def test_the_embeddings_prompts_name_are_written_as_a1111s_ti_hashes() -> None:
    hashes = FileHashes(embeddings={"easynegative": "c74b4e810b03", "style": "0123456789ab"})
    settings = parameters_text(HIRES, 0, "Euler", hashes).split("\n")[-1]
    assert settings.endswith('TI hashes: "easynegative: c74b4e810b03, style: 0123456789ab"')


def test_controlnet_units_are_written_as_sd_webui_controlnet_writes_them() -> None:
    unit = ControlNetUse(name="canny15", module="canny", weight=0.8, low_threshold=50)
    steered = HIRES.model_copy(
        update={
            "stages": [HIRES.stages[0].model_copy(update={"controlnets": [unit]}), HIRES.stages[1]]
        }
    )
    hashes = FileHashes(controlnets={"canny15": "d14c016b"})
    settings = parameters_text(steered, 0, "Euler", hashes).split("\n")[-1]
    assert (
        'ControlNet 0: "Module: canny, Model: canny15 [d14c016b], Weight: 0.8, Resize Mode: Crop '
        "and Resize, Threshold A: 50, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, "
        'Pixel Perfect: True, Control Mode: Balanced"'
    ) in settings


def test_an_ip_adapter_is_written_as_sd_webui_controlnet_writes_its_unit() -> None:
    canny = ControlNetUse(name="canny15", module="canny")
    look = IpAdapterUse(name="ip15", image="", weight=0.6)
    base = HIRES.stages[0].model_copy(update={"controlnets": [canny], "ip_adapters": [look]})
    steered = HIRES.model_copy(update={"stages": [base, HIRES.stages[1]]})
    hashes = FileHashes(controlnets={"canny15": "d14c016b", "ip15": "6a3f6166"})
    settings = parameters_text(steered, 0, "Euler", hashes).split("\n")[-1]
    assert (
        'ControlNet 1: "Module: ip-adapter-auto, Model: ip15 [6a3f6166], Weight: 0.6, Resize Mode: '
        "Crop and Resize, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control "
        'Mode: Balanced"'
    ) in settings
    unused = base.model_copy(update={"ip_adapters": [look.model_copy(update={"weight": 0})]})
    off = HIRES.model_copy(update={"stages": [unused, HIRES.stages[1]]})
    assert "ip15" not in parameters_text(off, 0, "Euler", hashes)  # weight 0 did not act


@pytest.mark.parametrize(
    ("upscaler", "handoff", "written"),
    [
        ("latent-bilinear-antialiased", "latent", "Latent (antialiased)"),
        ("latent-bicubic-antialiased", "latent", "Latent (bicubic antialiased)"),
        ("latent-nearest-exact", "latent", "Latent (nearest-exact)"),
        ("none", "pixel", "None"),
    ],
)
def test_the_hires_upscaler_is_written_as_it_was_asked(
    upscaler: str, handoff: str, written: str
) -> None:
    hires = HIRES.stages[1].model_copy(
        update={"upscaler": upscaler, "handoff": handoff, "model": "sd"}
    )
    spec = HIRES.model_copy(update={"stages": [HIRES.stages[0], hires]})
    assert f"Hires upscaler: {written}" in parameters_text(spec, 0, "Euler")


def test_hires_steps_are_written_only_when_the_pass_has_its_own() -> None:
    # A1111's hr_second_pass_steps 0 is the first pass's steps, and its infotext says nothing
    same = HIRES.stages[1].model_copy(update={"steps": HIRES.stages[0].steps})
    spec = HIRES.model_copy(update={"stages": [HIRES.stages[0], same]})
    assert "Hires steps" not in parameters_text(spec, 0, "Euler")
    assert "Hires steps: 8" in parameters_text(HIRES, 0, "Euler")
