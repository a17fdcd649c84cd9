"""AUTOMATIC1111's `/sdapi/v1` request and response shapes (its `modules/api/models.py`), as its
clients send and read them.

Requests accept every field A1111 declares; fields that cannot apply here (scripts, face
restoration, saving to the server's disk) are accepted and ignored where A1111
clients send them by default, and refused with a 422 naming the field where a client asks for
something this service would silently not do (docs/a1111.md). Unknown extra fields are
ignored, as A1111 itself does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract.spec import MAX_SEED

# Bounds A1111's own UI keeps (the job rules check the rest: sizes, budgets).
_SIDE = 16384
_STEPS = 150


class _Request(BaseModel):
    # Strict: a value of another JSON type than declared is refused, not coerced (`tiling: 0`,
    # `"2"` for a number); A1111's clients send JSON's own types. NaN and ±Infinity, which
    # Python's JSON parser takes, are no number here.
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1: random.")
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = 0.0
    seed_resize_from_h: int = Field(-1, ge=-1, le=_SIDE)
    seed_resize_from_w: int = Field(-1, ge=-1, le=_SIDE)
    sampler_name: str | None = Field(None, description="GET /sdapi/v1/samplers lists them.")
    sampler_index: str | None = Field(None, description="Deprecated: used without sampler_name.")
    scheduler: str | None = Field(None, description="GET /sdapi/v1/schedulers lists them.")
    batch_size: int = Field(1, ge=1, le=100)
    n_iter: int = Field(1, ge=1, le=100)
    steps: int = Field(50, ge=1, le=_STEPS)
    cfg_scale: float = 7.0
    width: int = Field(512, ge=64, le=_SIDE)  # A1111's UI minimum
    height: int = Field(512, ge=64, le=_SIDE)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = Field(
        None,
        description="Read: sd_model_checkpoint (the checkpoint of this request), "
        "CLIP_stop_at_last_layers (Clip skip, for models that read CLIP layers) and sd_vae (a "
        "VAE of GET /sdapi/v1/sd-vae; Automatic or None: the checkpoint's own).",
    )
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}
    infotext: str | None = None
    force_task_id: str | None = None


class Txt2ImgRequest(_Request):
    """StableDiffusionTxt2ImgProcessingAPI."""

    enable_hr: bool = False
    firstphase_width: int = Field(0, ge=0, le=_SIDE)
    firstphase_height: int = Field(0, ge=0, le=_SIDE)
    hr_scale: float = 2.0
    hr_upscaler: str | None = Field(
        None,
        description="Latent, Latent (bicubic), … keep latents; Lanczos, Nearest, None and the "
        "upscaler models of /sdapi/v1/upscalers decode.",
    )
    hr_second_pass_steps: int = Field(0, ge=0, le=_STEPS)
    hr_resize_x: int = Field(0, ge=0, le=_SIDE)
    hr_resize_y: int = Field(0, ge=0, le=_SIDE)
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # Forge's additions.
    hr_additional_modules: list[str] | None = Field(None, description="Forge's; ignored.")
    hr_cfg: float | None = Field(None, description="Forge's: the hires pass's CFG scale.")
    hr_distilled_cfg: float | None = Field(None, description="Forge's; ignored.")
    distilled_cfg_scale: float | None = Field(None, description="Forge's; ignored.")


class Img2ImgRequest(_Request):
    """StableDiffusionImg2ImgProcessingAPI."""

    init_images: list[str] = Field(default_factory=list, description="Base64 PNG/JPEG; one.")
    resize_mode: int = Field(
        0,
        ge=0,
        le=3,
        description="0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent "
        "upscale: not with a mask).",
    )
    image_cfg_scale: float | None = None
    mask: str | None = Field(
        None,
        description="Base64 PNG of the init image's size: white repaints, black keeps (the "
        "init image stays exact outside it and its blur).",
    )
    mask_blur_x: int = Field(4, ge=0, le=64)
    mask_blur_y: int = Field(4, ge=0, le=64, description="Only as mask_blur_x.")
    mask_blur: int | None = Field(None, ge=0, le=64, description="Over mask_blur_x/_y.")
    mask_round: bool = Field(True, description="Only true: masks are rounded.")
    inpainting_fill: int = Field(
        0, ge=0, le=3, description="0 fill, 1 original, 2 latent noise, 3 latent nothing."
    )
    inpaint_full_res: bool = Field(True, description="Only masked: the mask's region, scaled up.")
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = Field(None, description="Only 1.")
    latent_mask: str | None = Field(None, description="Not served: send none.")
    include_init_images: bool = False


class ImageResponse(BaseModel):
    """TextToImageResponse / ImageToImageResponse."""

    images: list[str] = Field(description="Base64 PNGs, each with its `parameters` text.")
    parameters: dict[str, Any] = Field(description="The request, as A1111 echoes it.")
    info: str = Field(description="JSON: seeds, sizes, `infotexts` (each PNG's parameters)…")


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float = Field(description="Of the caller's current job, 0 to 1.")
    eta_relative: float
    state: ProgressState
    current_image: str | None = Field(description="Never sent here: null.")
    textinfo: str | None


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class SDVaeItem(BaseModel):
    model_name: str = Field(description="As `override_settings.sd_vae` (or its file's name).")
    filename: str


class EmbeddingItem(BaseModel):
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    shape: int = Field(description="The width of its vectors (its first text encoder's).")
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem] = Field(
        description="Embeddings of the current checkpoint's architecture: its prompts take them."
    )
    skipped: dict[str, EmbeddingItem] = Field(
        description="Embeddings of other architectures: a prompt to this checkpoint naming one is "
        "refused (422 embedding_architecture_mismatch)."
    )


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


class LatentUpscalerModeItem(BaseModel):
    name: str


class ScriptsList(BaseModel):
    txt2img: list[str]
    img2img: list[str]
