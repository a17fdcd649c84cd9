"""What each model architecture is and can do, one row per architecture.

Every architecture rule the gateway and the workers enforce asks this table: the latent space
(which decides latent handoffs), sizes, defaults, samplers, and what its files look like (the keys
that mark its LoRAs and its single-file checkpoints). The worker's side of an architecture (its
diffusers pipeline classes and loading quirks) is one family module in `workers/families/`. A new
architecture is a row here (and one in `latent_spaces` if it brings a VAE of its own), a family
module, a demo builder and its tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from contract.latent_spaces import LATENT_SPACES, LatentSpace

# The architectures' names, as clients see them (an enum in the OpenAPI document).
ArchitectureName = Literal["sd15", "sdxl", "sdxl-refiner", "flux", "sd35", "chroma"]


@dataclass(frozen=True)
class Variant:
    """A named kind of one architecture's weights, with defaults of its own (Flux dev/schnell;
    SD1.5's and SDXL's inpainting UNets)."""

    name: str
    default_steps: int
    default_guidance: float
    # Its denoiser takes the masked picture and the mask beside the latents (9 input channels):
    # it only inpaints, a masked first stage.
    inpainting: bool = False
    # Its pipeline takes a latent start (A1111's latent masked-content modes); FLUX.1 Fill's
    # makes its masked picture from the pixels it is given, so it takes none.
    latent_start: bool = True
    # Its own guidance range, where it is not the architecture's (FLUX.1 Fill: 30 is typical).
    guidance_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class LoraKeys:
    """What a LoRA file trained for the architecture shows in its header (contract.lora_files)."""

    # A key containing one of these names (its denoiser's block names) marks it.
    block_names: tuple[str, ...] = ()
    # The width a cross-attention key projects from (the text encoders' width), in the shape of
    # an `attn2.to_k` down matrix: the UNet families differ only there.
    cross_attention_width: int | None = None
    # Layers of a second text encoder (`lora_te2_`, `text_encoder_2`) mark it where nothing else
    # does.
    second_text_encoder: bool = False


@dataclass(frozen=True)
class EmbeddingKeys:
    """What a textual-inversion embedding for the architecture holds (contract.embedding_files):
    a (vectors, width) tensor per text encoder, under these names, of these widths."""

    keys: tuple[str, ...]
    widths: tuple[int, ...]


@dataclass(frozen=True)
class ControlNetKeys:
    """What a ControlNet file for the architecture shows in its header (contract.controlnet_files)
    and its diffusers config."""

    # A key containing one of these marks it (the transformers' own input embedders).
    marks: tuple[str, ...] = ()
    # The width its cross-attention keys project from (the UNet families differ only there).
    cross_attention_width: int | None = None
    # diffusers' class for it (a folder's config names it).
    config_class: str = "ControlNetModel"
    # Recognized, so a file is named for what it is, but not served by the worker yet.
    served: bool = True
    # Where several ControlNets of one call take a control image per picture ("text": a stage
    # from text; "image": from a picture); elsewhere diffusers takes one image per ControlNet
    # for all of a call's pictures.
    several_per_picture: tuple[Literal["text", "image"], ...] = ("text", "image")


@dataclass(frozen=True)
class IpAdapterKeys:
    """What an IP-Adapter file for the architecture shows in its header
    (contract.ip_adapter_files)."""

    # The width its image keys (`to_k_ip`) project from: the width the denoiser's
    # cross-attention reads (the text encoders' width; Flux's joint attention width).
    cross_attention_width: int | None = None
    # A key containing one of these marks it (a layout of its own).
    marks: tuple[str, ...] = ()
    # Recognized, so a file is named for what it is, but not served by the worker yet.
    served: bool = True


@dataclass(frozen=True)
class Architecture:
    name: ArchitectureName
    latent_space: LatentSpace
    # Pixel sizes must be multiples of this (VAE downscale, times 2 where latents are packed 2x2).
    size_multiple: int
    # The size it was trained at (what `compile: true` compiles for by default).
    native_size: tuple[int, int]
    # False for refiner-only models: they need a picture or latents to start from.
    text_to_image: bool
    # Takes denoising_end / denoising_start, i.e. can hand over mid-schedule (ensemble of experts).
    mid_schedule_handoff: bool
    negative_prompt: bool
    guidance_range: tuple[float, float]
    default_guidance: float
    default_steps: int
    # Flow-matching models take their flow-matching Euler only (contract.samplers).
    flow_matching: bool
    text_encoders: tuple[str, ...]
    # Its prompt is read from a CLIP's hidden layers, so A1111's Clip skip picks which layer
    # (Flux reads only CLIP's pooled output, Chroma no CLIP at all).
    clip_skip: bool
    lora_keys: LoraKeys
    # Keys any of which marks a single-file checkpoint of it (original and diffusers layouts).
    checkpoint_keys: tuple[str, ...]
    # Which family module of the worker serves it (workers/families/<family>.py).
    family: str
    variants: tuple[Variant, ...] = ()
    # An architecture derived from another, whose files carry the other's key names plus marks of
    # their own: probes look for its marks first, and a LoRA whose keys show only the other's
    # names may be declared for it in the registry (Chroma is a pruned Flux).
    derived_from: ArchitectureName | None = None
    # Its textual-inversion embeddings' layout; None: its prompts take no embeddings.
    embedding_keys: EmbeddingKeys | None = None
    # Its ControlNets' marks; None: no ControlNet is made for it.
    controlnet_keys: ControlNetKeys | None = None
    # Its IP-Adapters' marks; None: no IP-Adapter is made for it.
    ip_adapter_keys: IpAdapterKeys | None = None

    def variant(self, name: str | None) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


_FLUX_BLOCKS = ("double_blocks", "single_blocks", "single_transformer_blocks")

# fmt: off
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "sd15", LATENT_SPACES["sd1"], size_multiple=8, native_size=(512, 512),
            text_to_image=True, mid_schedule_handoff=False, negative_prompt=True,
            guidance_range=(0.0, 30.0), default_guidance=7.0, default_steps=25,
            flow_matching=False, text_encoders=("CLIP-L",), clip_skip=True,
            lora_keys=LoraKeys(cross_attention_width=768),
            checkpoint_keys=("model.diffusion_model.output_blocks.11.0.skip_connection.weight",),
            family="sd", embedding_keys=EmbeddingKeys(("emb_params",), (768,)),
            variants=(Variant("inpainting", 25, 7.0, inpainting=True),),
            controlnet_keys=ControlNetKeys(
                cross_attention_width=768, several_per_picture=("text",)
            ),
            ip_adapter_keys=IpAdapterKeys(cross_attention_width=768),
        ),
        Architecture(
            "sdxl", LATENT_SPACES["sdxl"], size_multiple=8, native_size=(1024, 1024),
            text_to_image=True, mid_schedule_handoff=True, negative_prompt=True,
            guidance_range=(0.0, 30.0), default_guidance=7.0, default_steps=30,
            flow_matching=False, text_encoders=("CLIP-L", "CLIP-G"), clip_skip=True,
            lora_keys=LoraKeys(cross_attention_width=2048, second_text_encoder=True),
            checkpoint_keys=(
                "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
            ),
            family="sd", embedding_keys=EmbeddingKeys(("clip_l", "clip_g"), (768, 1280)),
            variants=(Variant("inpainting", 30, 7.0, inpainting=True),),
            controlnet_keys=ControlNetKeys(cross_attention_width=2048, several_per_picture=()),
            ip_adapter_keys=IpAdapterKeys(cross_attention_width=2048),
        ),
        Architecture(
            "sdxl-refiner", LATENT_SPACES["sdxl"], size_multiple=8, native_size=(1024, 1024),
            text_to_image=False, mid_schedule_handoff=True, negative_prompt=True,
            guidance_range=(0.0, 30.0), default_guidance=7.0, default_steps=30,
            flow_matching=False, text_encoders=("CLIP-G",), clip_skip=True,
            lora_keys=LoraKeys(cross_attention_width=1280),
            checkpoint_keys=(
                "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias",
            ),
            family="sd",
        ),
        Architecture(
            "flux", LATENT_SPACES["flux"], size_multiple=16, native_size=(1024, 1024),
            text_to_image=True, mid_schedule_handoff=False, negative_prompt=False,
            guidance_range=(0.0, 10.0), default_guidance=3.5, default_steps=28,
            flow_matching=True, text_encoders=("CLIP-L", "T5-XXL"), clip_skip=False,
            lora_keys=LoraKeys(block_names=_FLUX_BLOCKS),
            checkpoint_keys=(
                "double_blocks.0.img_attn.norm.key_norm.scale",
                "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale",
                "single_transformer_blocks.0.attn.norm_k.weight",
            ),
            # dev is guidance-distilled (it embeds the scale); schnell timestep-distilled.
            variants=(
                Variant("dev", 28, 3.5), Variant("schnell", 4, 0.0),
                # FLUX.1 Fill: the transformer takes the masked picture and the mask too.
                Variant(
                    "fill", 28, 30.0, inpainting=True, latent_start=False,
                    guidance_range=(0.0, 30.0),
                ),
            ),
            family="flux",
            # diffusers' (InstantX, Shakker) and XLabs' layouts
            controlnet_keys=ControlNetKeys(
                marks=("controlnet_x_embedder.", "pos_embed_input.weight"),
                config_class="FluxControlNetModel",
            ),
            # diffusers' layout (4096: T5's width) and XLabs' own
            ip_adapter_keys=IpAdapterKeys(
                cross_attention_width=4096, marks=("ip_adapter_double_stream_k_proj",),
                served=False,
            ),
        ),
        # SD3.5 Medium/Large: MMDiT on 2x2 patches (sizes multiples of 16), flow matching.
        Architecture(
            "sd35", LATENT_SPACES["sd3"], size_multiple=16, native_size=(1024, 1024),
            text_to_image=True, mid_schedule_handoff=False, negative_prompt=True,
            guidance_range=(0.0, 30.0), default_guidance=4.5, default_steps=28,
            flow_matching=True, text_encoders=("CLIP-L", "CLIP-G", "T5-XXL"), clip_skip=True,
            lora_keys=LoraKeys(block_names=("joint_blocks",)),
            checkpoint_keys=(
                "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight",
                "joint_blocks.0.context_block.attn.qkv.weight",
            ),
            family="sd3",
            controlnet_keys=ControlNetKeys(
                marks=("pos_embed_input.proj.",), config_class="SD3ControlNetModel", served=False
            ),
            # InstantX's: a timestep-modulated norm per layer
            ip_adapter_keys=IpAdapterKeys(marks=("norm_ip.linear.",), served=False),
        ),
        # Chroma: Flux schnell pruned (its per-block modulation replaced by one small network,
        # `distilled_guidance_layer`), T5 alone, real classifier-free guidance with a negative
        # prompt. It keeps Flux's VAE, so Flux and Chroma hand latents to each other. Defaults
        # are diffusers' ChromaPipeline's.
        Architecture(
            "chroma", LATENT_SPACES["flux"], size_multiple=16, native_size=(1024, 1024),
            text_to_image=True, mid_schedule_handoff=False, negative_prompt=True,
            guidance_range=(0.0, 30.0), default_guidance=5.0, default_steps=35,
            flow_matching=True, text_encoders=("T5-XXL",), clip_skip=False,
            lora_keys=LoraKeys(block_names=("distilled_guidance_layer",)),
            checkpoint_keys=(
                "distilled_guidance_layer.in_proj.weight",
                "model.diffusion_model.distilled_guidance_layer.in_proj.weight",
            ),
            family="chroma", derived_from="flux",
        ),
    )
}
# fmt: on


def most_specific_first() -> list[Architecture]:
    """The rows in the order a file's keys are matched against them: an architecture derived
    from another before the other (a Chroma file also carries Flux's key names)."""
    rows = list(ARCHITECTURES.values())
    return [a for a in rows if a.derived_from] + [a for a in rows if not a.derived_from]


class ComponentKeys(Protocol):
    """What a row says of the files of a component kind that plugs into its denoiser's layers
    (ControlNetKeys, IpAdapterKeys)."""

    @property
    def marks(self) -> tuple[str, ...]: ...
    @property
    def cross_attention_width(self) -> int | None: ...
    @property
    def served(self) -> bool: ...


KeysOf = Callable[[Architecture], ComponentKeys | None]


def controlnets_of(arch: Architecture) -> ComponentKeys | None:
    return arch.controlnet_keys


def ip_adapters_of(arch: Architecture) -> ComponentKeys | None:
    return arch.ip_adapter_keys


def shown_by_keys(
    header: dict[str, Any], keys_of: KeysOf, width_key: re.Pattern[str]
) -> str | None:
    """The architecture a component file's header shows: a row's marks in its keys (most specific
    row first), else the cross-attention width in the last dimension of a 2-D `width_key`
    tensor; None where it does not tell."""
    keys = [k for k in header if k != "__metadata__"]
    rows = [(a, k) for a in most_specific_first() if (k := keys_of(a)) is not None]
    for arch, kind in rows:
        if any(mark in key for key in keys for mark in kind.marks):
            return arch.name
    widths = {kind.cross_attention_width: arch.name for arch, kind in rows}
    for key in keys:
        if width_key.search(key):
            shape = header[key].get("shape") or []
            found = widths.get(shape[-1]) if len(shape) == 2 else None
            if found is not None:
                return found
    return None


def serving(keys_of: KeysOf) -> list[str]:
    """The architectures whose files of a component kind the worker serves."""
    return [a.name for a in ARCHITECTURES.values() if (k := keys_of(a)) is not None and k.served]
