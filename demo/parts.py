"""The pieces every demo model is built from: tokenizers made from vocabularies shipped in
`demo/assets/` (nothing is trained at build time), tiny CLIP and T5 text encoders, a VAE with
the real downscale of 8, a tiny UNet and the schedulers the released models ship with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

ASSETS = Path(__file__).parent / "assets"


def clip_tokenizer() -> CLIPTokenizer:
    vocab = json.loads((ASSETS / "clip-vocab.json").read_text())
    merges = (ASSETS / "clip-merges.txt").read_text().splitlines()[1:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def t5_tokenizer() -> T5Tokenizer:
    vocab = [tuple(piece) for piece in json.loads((ASSETS / "t5-vocab.json").read_text())]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def t5_encoder(tokenizer: T5Tokenizer, d_model: int) -> T5EncoderModel:
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


def clip_config(tokenizer: CLIPTokenizer, hidden: int, projection: int = 0) -> CLIPTextConfig:
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


def tiny_vae(latent_channels: int, scaling: float, shift: float | None = None) -> AutoencoderKL:
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


def sd_unet(cross_attention_dim: int, **extra: Any) -> UNet2DConditionModel:
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


def sd_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Flux's own: flow matching with the shift that grows with the picture's size."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
