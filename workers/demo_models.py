"""Tiny random-weight models that keep each architecture's real structure.

No machine this project runs on can reach a model hub, so tests and `make run` use these: real
diffusers folders (loadable with `DiffusionPipeline.from_pretrained`) whose latent channels, VAE
downscale and scaling/shift factors, text encoders and schedulers are those of SD1.5, SDXL, the
SDXL refiner, Flux and SD3.5, with layers shrunk until a 64-256 px image takes well under a
second on a CPU. Their pictures are noise; their tensor plumbing is real.

    python -m workers.demo_models build <dir>

The build is deterministic: fixed seeds, and tokenizers made from vocabularies shipped in
`workers/demo_assets/` (nothing is trained at build time).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from workers.demo_upscalers import build_upscalers

ASSETS = Path(__file__).parent / "demo_assets"
DEMO_MODELS = ("demo-sd15", "demo-sdxl", "demo-sdxl-refiner", "demo-flux", "demo-sd35")
# Not models: files other registry sections point at (workers/demo_upscalers.py).
DEMO_EXTRAS = ("demo-upscalers",)

# Written into every folder; a folder whose marker differs is rebuilt by `ensure_built`.
BUILD_VERSION = "1"
MARKER = "demo_build.json"


def _clip_tokenizer() -> CLIPTokenizer:
    vocab = json.loads((ASSETS / "clip-vocab.json").read_text())
    merges = (ASSETS / "clip-merges.txt").read_text().splitlines()[1:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _t5_tokenizer() -> T5Tokenizer:
    vocab = [tuple(piece) for piece in json.loads((ASSETS / "t5-vocab.json").read_text())]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _t5_encoder(tokenizer: T5Tokenizer, d_model: int) -> T5EncoderModel:
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def _clip_config(tokenizer: CLIPTokenizer, hidden: int, projection: int = 0) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vae(latent_channels: int, scaling: float, shift: float | None = None) -> AutoencoderKL:
    # Four blocks give the real downscale factor of 8.
    flux_style = shift is not None
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=not flux_style,
        use_post_quant_conv=not flux_style,
    )


def _sd_unet(cross_attention_dim: int, **extra: Any) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4),
        cross_attention_dim=cross_attention_dim,
        **extra,
    )


def _sd_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_sd15(out: Path) -> None:
    torch.manual_seed(15)
    tokenizer = _clip_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=_vae(4, 0.18215),
        text_encoder=CLIPTextModel(_clip_config(tokenizer, 32)),
        tokenizer=tokenizer,
        unet=_sd_unet(32),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)


def _sdxl_shared(seed: int) -> tuple[AutoencoderKL, CLIPTextModelWithProjection, CLIPTokenizer]:
    """The VAE and second text encoder that SDXL base and refiner share (as the real ones do)."""
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    vae = _vae(4, 0.13025)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer, 32, projection=32))
    return vae, text_encoder_2, tokenizer


def build_sdxl(out: Path) -> None:
    vae, text_encoder_2, tokenizer = _sdxl_shared(1024)
    torch.manual_seed(1)
    # cross_attention_dim = hidden(te1) + hidden(te2); add embedding = pooled(te2) + 6 time ids x 8.
    unet = _sd_unet(
        64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
        transformer_layers_per_block=(1, 1),
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_clip_config(tokenizer, 32)),
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_sd_scheduler(),
    )
    pipe.save_pretrained(out)


def build_sdxl_refiner(out: Path) -> None:
    vae, text_encoder_2, tokenizer = _sdxl_shared(1024)
    torch.manual_seed(2)
    # The refiner conditions on text_encoder_2 only and on an aesthetic score (5 time ids).
    unet = _sd_unet(
        32,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 5 * 8,
        transformer_layers_per_block=(1, 1),
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_sd_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(out)


def build_flux(out: Path) -> None:
    torch.manual_seed(16)
    clip_tokenizer = _clip_tokenizer()
    t5_tokenizer = _t5_tokenizer()
    t5 = _t5_encoder(t5_tokenizer, d_model=32)
    # in_channels 64 = 16 latent channels packed 2x2; rope axes sum to attention_head_dim.
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=_vae(16, 0.3611, 0.1159),
        text_encoder=CLIPTextModel(_clip_config(clip_tokenizer, 32)),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(out)


def build_sd35(out: Path) -> None:
    """SD3.5 Medium's structure: MMDiT-X (a dual-attention first block, RMS qk-norm), three text
    encoders (CLIP-L, CLIP-G, T5), and its own 16-channel VAE (scaling 1.5305, shift 0.0609) —
    the same channel count as Flux's, another latent space."""
    torch.manual_seed(35)
    clip_tokenizer = _clip_tokenizer()
    t5_tokenizer = _t5_tokenizer()
    # d_model is the joint attention width; CLIP's 32 + 32 are padded up to it.
    t5 = _t5_encoder(t5_tokenizer, d_model=64)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=16,
        pos_embed_max_size=96,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=_vae(16, 1.5305, 0.0609),
        text_encoder=CLIPTextModelWithProjection(_clip_config(clip_tokenizer, 32)),
        tokenizer=clip_tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(clip_tokenizer, 32)),
        tokenizer_2=clip_tokenizer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(out)


BUILDERS = {
    "demo-sd15": build_sd15,
    "demo-sdxl": build_sdxl,
    "demo-sdxl-refiner": build_sdxl_refiner,
    "demo-flux": build_flux,
    "demo-sd35": build_sd35,
    "demo-upscalers": build_upscalers,
}


def _is_current(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION


def ensure_built(root: Path, names: tuple[str, ...] = DEMO_MODELS + DEMO_EXTRAS) -> list[Path]:
    """Build each demo model under `root` unless an up-to-date copy is already there.

    Builders take turns (a lock file in `root`): test processes started together, or `make run`
    beside a test run, would otherwise build into the same temporary folder at once.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = _build_missing(root, names)
        for name in names:  # copies built before this rule was kept, too
            readable_by_all(root / name)
        return built


def _build_missing(root: Path, names: tuple[str, ...]) -> list[Path]:
    built = []
    for name in names:
        folder = root / name
        if _is_current(folder):
            continue
        # Build beside the target and rename, so a killed build never leaves a half folder.
        tmp = root / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        BUILDERS[name](tmp)
        (tmp / MARKER).write_text(json.dumps({"version": BUILD_VERSION, "model": name}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        built.append(folder)
    return built


def readable_by_all(folder: Path) -> None:
    """`chmod -R a+rX`: safetensors writes weights 0600 whatever the umask, and a container's
    user (uid 10001 in the worker image) reads these through a read-only mount."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | (0o555 if path.is_dir() else 0o444))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.demo_models")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the tiny demo models into a folder")
    build.add_argument("dir", type=Path)
    every = DEMO_MODELS + DEMO_EXTRAS
    build.add_argument("--only", nargs="*", choices=every, default=list(every))
    args = parser.parse_args(argv)
    for folder in ensure_built(args.dir, tuple(args.only)):
        print(f"built {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
