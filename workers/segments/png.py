"""Result PNGs: deterministic bytes, with the parameters every SD tool reads.

Each PNG carries an A1111-style `parameters` text chunk (prompt, `Negative prompt:` line, then
`Steps: …, Sampler: …, CFG scale: …, Seed: …, Size: …, Model: …` and the hires / refiner fields
where they apply; an upscale job's, which drew nothing, A1111's Extras `postprocessing` chunk
instead) and the full normalized job spec as JSON in an `imagegen-spec` chunk.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.checked import CheckedSpec, HiresStage, RefineStage, UpscaleStage
from contract.samplers import AUTOMATIC, SCHEDULE_LABELS, sampler_name
from contract.spec import ControlNetUse, IpAdapterUse

__all__ = ["FileHashes", "encode_png", "parameters_text", "postprocessing_text", "sampler_name"]

SPEC_CHUNK = "imagegen-spec"


# Our upscaler names -> the names A1111 writes (its "Latent" upscaler is bilinear).
_A1111_UPSCALERS = {
    "lanczos": "Lanczos",
    "nearest": "Nearest",
    "bicubic": "Bicubic",
    "none": "None",
    "latent-bilinear": "Latent",
    "latent-bilinear-antialiased": "Latent (antialiased)",
    "latent-bicubic": "Latent (bicubic)",
    "latent-bicubic-antialiased": "Latent (bicubic antialiased)",
    "latent-nearest": "Latent (nearest)",
    "latent-nearest-exact": "Latent (nearest-exact)",
}


def _quote(value: object) -> str:
    """As A1111's infotext quotes a value: JSON-quoted once it holds a comma, colon or newline."""
    text = str(value)
    if not any(char in text for char in ",:\n"):
        return text
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class FileHashes:
    """A1111's short hashes of the registered files a job used, by registry name."""

    loras: dict[str, str] = field(default_factory=dict)
    vaes: dict[str, str] = field(default_factory=dict)
    embeddings: dict[str, str] = field(default_factory=dict)
    # sd-webui-controlnet's 8 digits, of ControlNets and IP-Adapters
    controlnets: dict[str, str] = field(default_factory=dict)


def parameters_text(
    spec: CheckedSpec, index: int, sampler: str, hashes: FileHashes | None = None
) -> str:
    """The A1111 `parameters` text for image `index` of a normalized spec, field by field as
    A1111's `create_infotext` writes it. The first stage's LoRAs appear as A1111 prompts carry
    them (`<lora:name:weight>`), with `Lora hashes`; its VAE as `VAE hash` and `VAE`; the
    embeddings its prompts name as `TI hashes`; its ControlNets as sd-webui-controlnet writes
    them (`ControlNet 0: "Module: canny, Model: name [hash], Weight: 1.0, …"`)."""
    hashes = hashes or FileHashes()
    base = spec.stages[0]
    fields: list[tuple[str, object]] = [
        ("Steps", base.steps),
        ("Sampler", sampler),
        ("Schedule type", _schedule(spec.stages[0].scheduler)),
        ("CFG scale", base.guidance_scale),
        ("Seed", spec.seed_of(index)),
        ("Size", f"{spec.width}x{spec.height}"),
        ("Model", base.model),
    ]
    if base.vae is not None:  # A1111 writes the 10 hex digits of its VAE hash
        fields += [("VAE hash", hashes.vaes.get(base.vae, "")[:10] or None), ("VAE", base.vae)]
    hires = next((s for s in spec.stages if isinstance(s, HiresStage)), None)
    if spec.strength is not None:
        fields.append(("Denoising strength", spec.strength))
    elif hires is not None:
        fields.append(("Denoising strength", hires.denoise))
    # A masked job (its settings filled in), as A1111's img2img writes one.
    if spec.mask_blur is not None:
        fields += [
            ("Mask blur", spec.mask_blur),
            ("Mask mode", "Inpaint not masked" if spec.invert_mask else None),
            ("Masked content", spec.masked_content),
        ]
    fields.append(("Clip skip", base.clip_skip))  # None (A1111's 1) is not written
    if hires is not None:
        if hires.scale is None:  # the client gave the size itself
            fields.append(("Hires resize", f"{hires.width}x{hires.height}"))
        else:
            fields.append(("Hires upscale", hires.scale))
        if hires.sampler is not None and hires.sampler != sampler:
            fields.append(("Hires sampler", hires.sampler))
        fields += [
            # A1111 writes it only when the hires pass has steps of its own (0: the first
            # pass's), and reads its absence so.
            ("Hires steps", None if hires.steps == base.steps else hires.steps),
            ("Hires upscaler", _upscaler_name(hires.upscaler)),
        ]
        if hires.model != base.model:
            fields.append(("Hires checkpoint", hires.model))
        fields += [("Hires prompt", hires.prompt), ("Hires negative prompt", hires.negative_prompt)]
    refine = next((s for s in spec.stages if isinstance(s, RefineStage)), None)
    if refine is not None:
        fields += [("Refiner", refine.model), ("Refiner switch at", refine.switch_at)]
    for k, use in enumerate(base.controlnets or ()):
        fields.append((f"ControlNet {k}", _controlnet_unit(use, hashes.controlnets.get(use.name))))
    # sd-webui-controlnet runs IP-Adapters as units too, and writes them so, after the rest.
    acting = [u for u in base.ip_adapters or () if u.weight > 0]
    for k, ip in enumerate(acting, start=len(base.controlnets or ())):
        fields.append((f"ControlNet {k}", _ip_adapter_unit(ip, hashes.controlnets.get(ip.name))))
    if hashes.loras:
        fields.append(("Lora hashes", ", ".join(f"{n}: {h}" for n, h in hashes.loras.items())))
    if hashes.embeddings:
        fields.append(("TI hashes", ", ".join(f"{n}: {h}" for n, h in hashes.embeddings.items())))
    tags = "".join(f" <lora:{u.name}:{u.weight:g}>" for u in base.loras or ())
    lines = [spec.prompt + tags]
    if spec.negative_prompt:
        lines.append(f"Negative prompt: {spec.negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


_RESIZE_MODES = {
    "just_resize": "Just Resize",
    "crop_and_resize": "Crop and Resize",
    "resize_and_fill": "Resize and Fill",
}


def _controlnet_unit(use: ControlNetUse, short_hash: str | None) -> str:
    """A unit as sd-webui-controlnet's infotext writes it: its fields, comma-separated."""
    model = f"{use.name} [{short_hash}]" if short_hash else use.name
    parts = [
        ("Module", use.module),
        ("Model", model),
        ("Weight", use.weight),
        ("Resize Mode", _RESIZE_MODES[use.resize]),
    ]
    if use.module == "canny":
        parts += [("Threshold A", use.low_threshold), ("Threshold B", use.high_threshold)]
    parts += [
        ("Guidance Start", use.guidance_start),
        ("Guidance End", use.guidance_end),
        ("Pixel Perfect", True),  # the preprocessor ran at the stage's own size
        ("Control Mode", "Balanced"),
    ]
    return ", ".join(f"{k}: {v}" for k, v in parts)


def _ip_adapter_unit(use: IpAdapterUse, short_hash: str | None) -> str:
    """An IP-Adapter as sd-webui-controlnet's infotext writes its unit (`ip-adapter-auto`: the
    extension's preprocessor that picks the image encoder by the model)."""
    model = f"{use.name} [{short_hash}]" if short_hash else use.name
    parts = [
        ("Module", "ip-adapter-auto"),
        ("Model", model),
        ("Weight", use.weight),
        ("Resize Mode", "Crop and Resize"),  # CLIP's preprocessing: the short side, cropped
        ("Guidance Start", 0.0),
        ("Guidance End", 1.0),
        ("Pixel Perfect", False),
        ("Control Mode", "Balanced"),
    ]
    return ", ".join(f"{k}: {v}" for k, v in parts)


def postprocessing_text(spec: CheckedSpec) -> str:
    """An upscale job's A1111 `postprocessing` text, as its Extras tab writes it: the factor
    (or the size asked), then the upscaler."""
    stage = spec.stages[0]
    assert isinstance(stage, UpscaleStage)
    fields: list[tuple[str, object]] = (
        [("Postprocess upscale by", stage.scale)]
        if stage.scale is not None
        else [("Postprocess upscale to", f"{stage.width}x{stage.height}")]
    )
    fields.append(("Postprocess upscaler", _upscaler_name(str(stage.upscaler))))
    return ", ".join(f"{k}: {_quote(v)}" for k, v in fields)


def encode_png(
    image: Image.Image,
    parameters: str | None = None,
    spec_json: str | None = None,
    postprocessing: str | None = None,
) -> bytes:
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)  # iTXt when not Latin-1
    if postprocessing is not None:
        info.add_text("postprocessing", postprocessing)
    if spec_json is not None:
        info.add_text(SPEC_CHUNK, spec_json)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=6)
    return out.getvalue()


def _upscaler_name(upscaler: str | None) -> str | None:
    """A built-in resampler under A1111's name; an upscaler model under its registry name, as
    A1111 writes a model's name."""
    return None if upscaler is None else _A1111_UPSCALERS.get(upscaler, upscaler)


def _schedule(schedule: str | None) -> str | None:
    """A1111 writes the schedule only when it is not the sampler's own."""
    return None if schedule in (None, AUTOMATIC) else SCHEDULE_LABELS[schedule]
