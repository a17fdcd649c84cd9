"""The demo SD3.5 (Medium's structure)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextModelWithProjection

from demo.parts import clip_config, clip_tokenizer, t5_encoder, t5_tokenizer, tiny_vae


def build_sd35(out: Path) -> None:
    """SD3.5 Medium's structure: MMDiT-X (a dual-attention first block, RMS qk-norm), three text
    encoders (CLIP-L, CLIP-G, T5), and its own 16-channel VAE (scaling 1.5305, shift 0.0609) —
    the same channel count as Flux's, another latent space."""
    torch.manual_seed(35)
    clip_tok = clip_tokenizer()
    t5_tok = t5_tokenizer()
    # d_model is the joint attention width; CLIP's 32 + 32 are padded up to it.
    t5 = t5_encoder(t5_tok, d_model=64)
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
        vae=tiny_vae(16, 1.5305, 0.0609),
        text_encoder=CLIPTextModelWithProjection(clip_config(clip_tok, 32)),
        tokenizer=clip_tok,
        text_encoder_2=CLIPTextModelWithProjection(clip_config(clip_tok, 32)),
        tokenizer_2=clip_tok,
        text_encoder_3=t5,
        tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(out)


BUILDERS = {"demo-sd35": build_sd35}
