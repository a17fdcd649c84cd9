"""Full-size SD1.5 and SDXL, and a wide Flux, with random weights, from the real configs.

Their output is noise, but their compute and memory are the real models', which is what a GPU
measurement needs when no checkpoint can be downloaded. The wide Flux has the released width
(3072, 24 heads of 128) and VAE but fewer blocks than 19+38, and a T5 of T5-XXL's width with
two layers: its denoising step scales with the blocks; the text is encoded once per job.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

from demo.parts import clip_tokenizer, t5_tokenizer


def _vae(scaling: float, channels: int = 4, shift: float | None = None) -> AutoencoderKL:
    flux_style = shift is not None
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=channels,
        sample_size=512 if not flux_style else 1024,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=not flux_style,
        use_post_quant_conv=not flux_style,
    )


def _clip(hidden: int, layers: int, heads: int, projection: bool = False) -> torch.nn.Module:
    tokenizer = clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if hidden == 768 else "gelu",
        projection_dim=1280 if projection else 768,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_sd15(out: Path) -> None:
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        pipe = StableDiffusionPipeline(
            vae=_vae(0.18215),
            text_encoder=_clip(768, 12, 12),
            tokenizer=clip_tokenizer(),
            unet=unet,
            scheduler=_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(torch.float16).save_pretrained(out)


def build_sdxl(out: Path) -> None:
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        unet = UNet2DConditionModel(
            sample_size=128,
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            use_linear_projection=True,
        )
        pipe = StableDiffusionXLPipeline(
            vae=_vae(0.13025),
            text_encoder=_clip(768, 12, 12),
            text_encoder_2=_clip(1280, 32, 20, projection=True),
            tokenizer=clip_tokenizer(),
            tokenizer_2=clip_tokenizer(),
            unet=unet,
            scheduler=_scheduler(),
        )
    pipe.to(torch.float16).save_pretrained(out)


def build_flux_wide(out: Path, double: int = 4, single: int = 8) -> None:
    """Flux at its released width with `double` + `single` blocks (of 19 + 38), in bf16."""
    torch.manual_seed(0)
    t5_tok = t5_tokenizer()
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
            pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        )  # fmt: skip
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tok), d_model=4096, d_kv=64, d_ff=10240, num_layers=2,
                num_heads=64, feed_forward_proj="gated-gelu",
                pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id,
                decoder_start_token_id=t5_tok.pad_token_id,
            )
        )  # fmt: skip
        scheduler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
            max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
        )  # fmt: skip
        pipe = FluxPipeline(
            scheduler=scheduler,
            vae=_vae(0.3611, channels=16, shift=0.1159),
            text_encoder=_clip(768, 12, 12),
            tokenizer=clip_tokenizer(),
            text_encoder_2=t5,
            tokenizer_2=t5_tok,
            transformer=transformer,
        )
    pipe.to(torch.bfloat16).save_pretrained(out)
