"""The worker's side of each architecture: one module per family (`sd`, `flux`, `sd3`, `chroma`)
holding its diffusers pipeline classes and loading quirks, named by the architecture's row
(`contract.architectures`, field `family`). Everything else in the worker asks `pipelines_for`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import DiffusionPipeline, ModelMixin

from contract.architectures import ARCHITECTURES
from contract.registry import ModelEntry, SingleFileSource

# How a pipeline call applies guidance (workers.stages.guidance gives each picture its own scale):
# "halves": classifier-free guidance on an unconditional and a conditional half of one call;
# "two_calls": the same, with the unconditional prediction from a second call of the denoiser;
# "input": the scale is an input of the denoiser (guidance-distilled Flux dev).
GuidanceStyle = Literal["halves", "two_calls", "input"]

# Reads a single file the family's own way: (entry, its source, text pipeline class, dtype,
# components already made, which it uses instead of reading its own: a T5 from `source.t5`).
SingleFileReader = Callable[
    [ModelEntry, SingleFileSource, type[DiffusionPipeline], torch.dtype, dict[str, ModelMixin]],
    DiffusionPipeline,
]

# A family's converter from a single file's denoiser names to its loaded denoiser's (tensors
# in, tensors out), given the config folder.
DenoiserNames = Callable[[dict[str, torch.Tensor], Path], dict[str, torch.Tensor]]


class ArchitectureMismatch(ValueError):
    """The weights are not what the registry entry says they are."""


Several = Literal["per_unit", "per_picture", "shared"]


@dataclass(frozen=True)
class ControlNetPipelines:
    """What an architecture's ControlNets load as, and the pipelines that call them."""

    text: type[DiffusionPipeline]  # txt2img steered: `image` is the control image
    image: type[DiffusionPipeline]  # img2img steered: `control_image`
    model: type[ModelMixin]
    multi: type[ModelMixin]  # several at once (one is a list of one)
    # The call's control image argument on its txt2img pipeline.
    text_image_arg: Literal["image", "control_image"] = "image"
    # How several ControlNets take one control image per picture, in the txt2img and the
    # img2img pipeline: "per_unit" (a list of each one's pictures), "per_picture" (a list of
    # each picture's units), or "shared" (one image per unit for the whole call: the rule,
    # `contract.controlnets`, sends nothing else; the row's `several_per_picture` says where).
    several_text: Several = "per_unit"
    several_image: Several = "per_unit"
    # Several need a control_mode each (None: not a union ControlNet): diffusers' Flux pipelines
    # zip the ControlNets with their modes, and run none where no modes are given.
    several_need_modes: bool = False


@dataclass(frozen=True)
class Pipelines:
    """What one architecture loads and calls."""

    text: type[DiffusionPipeline]  # txt2img (a refiner's is its img2img)
    image: type[DiffusionPipeline]  # img2img
    denoiser: type[ModelMixin]
    # The denoiser's folder in a diffusers layout, and its attribute on the pipeline.
    denoiser_folder: Literal["unet", "transformer"]
    guidance: GuidanceStyle
    # Its inpainting pipeline (a masked first stage: `workers.stages.masks`), built from the
    # loaded components like the img2img one.
    inpaint: type[DiffusionPipeline] | None = None
    # An inpainting variant's own pipeline, where it is not `inpaint` (FLUX.1 Fill's).
    fill: type[DiffusionPipeline] | None = None
    # Its img2img resizes its input to its default sample size unless given height and width.
    image_takes_size: bool = False
    # A single file read the family's own way, instead of diffusers' from_single_file.
    read_single_file: SingleFileReader | None = None
    # Its single files' denoiser names -> the loaded denoiser's, given the config folder: the
    # converter its loader runs, asked where a ComfyUI scaled-fp8 file's scales go
    # (`workers.models.scaled_fp8`; None: such files are refused).
    scaled_names: DenoiserNames | None = None
    # That reader reads GGUF files, their weights kept quantized (`gguf_files`).
    reads_gguf: bool = False
    # That reader reads bitsandbytes 4-bit files (Forge's NF4: `nf4_files`).
    reads_four_bit: bool = False
    # A GGUF file's reader where the family reads other single files with diffusers' own.
    read_gguf: SingleFileReader | None = None
    # Checks the loaded weights against the entry (a Flux variant); raises ArchitectureMismatch.
    check_weights: Callable[[ModelEntry, DiffusionPipeline], None] | None = None
    # Mends the img2img pipeline once made (where diffusers' own needs it).
    mend_image: Callable[[DiffusionPipeline], None] | None = None
    # Where the architecture's ControlNets are served.
    controlnet: ControlNetPipelines | None = None

    @property
    def reads_scaled_fp8(self) -> bool:
        return self.scaled_names is not None

    def denoiser_of(self, pipe: DiffusionPipeline) -> torch.nn.Module:
        module: torch.nn.Module = getattr(pipe, self.denoiser_folder)
        return module


def pipelines_for(architecture: str) -> Pipelines:
    """The pipeline classes and quirks of `architecture`, from its family's module."""
    family = importlib.import_module(f"workers.families.{ARCHITECTURES[architecture].family}")
    pipelines: dict[str, Pipelines] = family.PIPELINES
    return pipelines[architecture]
