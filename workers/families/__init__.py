"""The worker's side of each architecture: one module per family (`sd`, `flux`, `sd3`, `chroma`)
holding its diffusers pipeline classes and loading quirks, named by the architecture's row
(`contract.architectures`, field `family`). Everything else in the worker asks `pipelines_for`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
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

# Reads a single file the family's own way: (entry, its source, text pipeline class, dtype).
SingleFileReader = Callable[
    [ModelEntry, SingleFileSource, type[DiffusionPipeline], torch.dtype], DiffusionPipeline
]


class ArchitectureMismatch(ValueError):
    """The weights are not what the registry entry says they are."""


@dataclass(frozen=True)
class Pipelines:
    """What one architecture loads and calls."""

    text: type[DiffusionPipeline]  # txt2img (a refiner's is its img2img)
    image: type[DiffusionPipeline]  # img2img
    denoiser: type[ModelMixin]
    # The denoiser's folder in a diffusers layout, and its attribute on the pipeline.
    denoiser_folder: Literal["unet", "transformer"]
    guidance: GuidanceStyle
    # Its img2img resizes its input to its default sample size unless given height and width.
    image_takes_size: bool = False
    # A single file read the family's own way, instead of diffusers' from_single_file.
    read_single_file: SingleFileReader | None = None
    # Checks the loaded weights against the entry (a Flux variant); raises ArchitectureMismatch.
    check_weights: Callable[[ModelEntry, DiffusionPipeline], None] | None = None
    # Mends the img2img pipeline once made (where diffusers' own needs it).
    mend_image: Callable[[DiffusionPipeline], None] | None = None

    def denoiser_of(self, pipe: DiffusionPipeline) -> torch.nn.Module:
        module: torch.nn.Module = getattr(pipe, self.denoiser_folder)
        return module


def pipelines_for(architecture: str) -> Pipelines:
    """The pipeline classes and quirks of `architecture`, from its family's module."""
    family = importlib.import_module(f"workers.families.{ARCHITECTURES[architecture].family}")
    pipelines: dict[str, Pipelines] = family.PIPELINES
    return pipelines[architecture]
