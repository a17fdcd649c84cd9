"""`compile: true` in the registry: the denoiser compiled with torch.compile when the model loads.

Compiling is slow (measured: 52 s for the tiny demo UNet on 2 CPU cores; 135 s for the full SDXL
UNet on an H200), so it happens at load (preload), never inside a job, for the sizes the entry
lists (`compile_sizes`, default the architecture's native size). The batch dimension is left
dynamic, so batched calls of any size reuse the same code. A size that was not compiled runs
eagerly instead of stalling its job for minutes on a compile.

Inductor keeps what it compiled in its cache folder (`TORCHINDUCTOR_CACHE_DIR`; compose puts it
on a volume), so a restarted worker loads compiled code instead of compiling again (measured on
the demo UNet: 4.5 s warm against 52 s cold).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from contract.registry import ModelEntry
from workers.families import pipelines_for

log = logging.getLogger("imagegen.worker")


class CompiledDenoiser:
    """Replaces a denoiser's `forward`: the compiled code for the latent shapes compiled at load,
    the module's own code for any other."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.eager: Callable[..., Any] = module.forward
        self.compiled: Callable[..., Any] = torch.compile(self.eager)
        self.shapes: set[tuple[int, ...]] = set()  # latent shapes without the batch dimension
        self.warming = False
        self.eager_calls = 0
        self.compiled_calls = 0
        module.forward = self.forward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        latents = _latents(args, kwargs)
        shape = tuple(latents.shape[1:]) if latents is not None else ()
        if self.warming:
            self.shapes.add(shape)
        elif shape not in self.shapes:
            self.eager_calls += 1
            return self.eager(*args, **kwargs)
        if latents is not None:
            _batch_dynamic(latents.shape[0], args, kwargs)
        self.compiled_calls += 1
        return self.compiled(*args, **kwargs)


def compile_denoiser(entry: ModelEntry, pipe: DiffusionPipeline) -> CompiledDenoiser:
    """Compile `pipe`'s denoiser for the entry's sizes, by running one step at each."""
    compiled = CompiledDenoiser(pipelines_for(entry.architecture).denoiser_of(pipe))
    sizes = entry.compile_sizes or [entry.arch.native_size]
    started = time.perf_counter()
    compiled.warming = True
    try:
        for width, height in sizes:
            _one_step(entry, pipe, width, height)
    finally:
        compiled.warming = False
    log.info(
        "compiled %s for %s in %.1f s",
        entry.name,
        ", ".join(f"{w}x{h}" for w, h in sizes),
        time.perf_counter() - started,
    )
    return compiled


def _one_step(entry: ModelEntry, pipe: DiffusionPipeline, width: int, height: int) -> None:
    kwargs: dict[str, Any] = {
        "prompt": "",
        "num_inference_steps": 1,
        "height": height,
        "width": width,
        "output_type": "latent",
    }
    if not entry.arch.text_to_image:  # a refiner's text pipeline is img2img
        kwargs = {
            "prompt": "",
            "image": Image.new("RGB", (width, height)),
            "num_inference_steps": 2,
            "strength": 1.0,
            "output_type": "latent",
        }
    with torch.inference_mode():
        pipe(**kwargs)


def _latents(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The latents a denoiser is called with: its first argument, or by its name."""
    first = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
    return first if isinstance(first, torch.Tensor) else None


def _batch_dynamic(batch: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Every tensor argument's batch dimension symbolic: one compiled graph for any batch."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
            torch._dynamo.maybe_mark_dynamic(value, 0)
