"""The demo Chroma: a one-block Chroma transformer (Flux's blocks without their modulation, one
small `distilled_guidance_layer` instead) on Flux's latent space, with Flux's VAE itself (the
demo Flux's weights, as the real Chroma keeps the real Flux VAE) and T5 alone."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ChromaPipeline, ChromaTransformer2DModel

from demo.flux import flux_vae
from demo.parts import flux_scheduler, t5_encoder, t5_tokenizer


def build_chroma(out: Path) -> None:
    torch.manual_seed(17)
    tokenizer = t5_tokenizer()
    # in_channels 64 = 16 latent channels packed 2x2; rope axes sum to attention_head_dim.
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=1,
    )
    pipe = ChromaPipeline(
        scheduler=flux_scheduler(),
        vae=flux_vae(),
        text_encoder=t5_encoder(tokenizer, d_model=32),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(out)


BUILDERS = {"demo-chroma": build_chroma}
