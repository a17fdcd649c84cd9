"""The demo Flux (dev): a one-block transformer on 16 latent channels packed 2x2 (64 features),
CLIP-L and T5, Flux's VAE factors and scheduler."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel

from demo.parts import (
    clip_config,
    clip_tokenizer,
    flux_scheduler,
    t5_encoder,
    t5_tokenizer,
    tiny_vae,
)


def flux_vae() -> AutoencoderKL:
    """Flux's VAE (16 channels, scaling 0.3611, shift 0.1159), the same weights every time: the
    demo Chroma takes it too, as the real one does, so the two share one latent space."""
    with torch.random.fork_rng():
        torch.manual_seed(3611)
        return tiny_vae(16, 0.3611, 0.1159)


def build_flux(out: Path) -> None:
    torch.manual_seed(16)
    clip_tok = clip_tokenizer()
    t5_tok = t5_tokenizer()
    t5 = t5_encoder(t5_tok, d_model=32)
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
    scheduler = flux_scheduler()
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=flux_vae(),
        text_encoder=CLIPTextModel(clip_config(clip_tok, 32)),
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(out)


BUILDERS = {"demo-flux": build_flux}
