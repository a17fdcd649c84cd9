"""Each picture's own guidance scale in a pipeline call shared by jobs that asked for others.

diffusers applies one guidance scale to a whole call. With classifier-free guidance (SD1.5, SDXL,
SD3.5) it runs the denoiser on an unconditional and a conditional half and computes
u + g·(c − u); a hook on the denoiser's output rescales each picture's conditional half,
c' = u + (gᵢ/g)·(c − u), so that the pipeline's one g gives uᵢ + gᵢ·(cᵢ − uᵢ), the picture's own.
Chroma makes the two predictions in two calls, the conditional first: the hook keeps c and
rescales the unconditional one instead, u' = (u·(1 − gᵢ) + (gᵢ − g)·c) / (1 − g), for the same
result. Flux dev, and guidance-distilled (LCM) UNets, take guidance as an input instead: a hook on
the inputs hands each picture its own. Pictures batched with equal scales take no hook. Which
style a pipeline guides in is its family's word (`workers.families`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from diffusers import DiffusionPipeline

from workers.families import Pipelines


@contextlib.contextmanager
def per_picture_guidance(
    pipe: DiffusionPipeline, classes: Pipelines, scales: list[float]
) -> Iterator[float]:
    """While the call runs, picture k is guided by `scales[k]`; yields the one scale to pass to
    the pipeline. With classifier-free guidance, all scales are above 1 or none (batch key)."""
    first = scales[0]
    denoiser = classes.denoiser_of(pipe)
    embedded = getattr(denoiser.config, "time_cond_proj_dim", None)  # guidance-distilled (LCM)
    if all(scale == first for scale in scales):
        yield first
        return
    if classes.guidance == "input":
        handle = denoiser.register_forward_pre_hook(_flux_inputs(scales), with_kwargs=True)
    elif embedded is not None:
        hook = _embedding_inputs(pipe, scales, embedded)
        handle = denoiser.register_forward_pre_hook(hook, with_kwargs=True)
    elif all(scale <= 1 for scale in scales):
        yield first  # the pipeline does not guide: the scale changes nothing
        return
    else:
        assert all(scale > 1 for scale in scales), "classifier-free guidance on for all or none"
        rescale = _cfg_output if classes.guidance == "halves" else _second_call_output
        handle = denoiser.register_forward_hook(rescale(scales, first))
    try:
        yield first
    finally:
        handle.remove()


def _cfg_output(scales: list[float], passed: float) -> Callable[..., Any]:
    ratios = torch.tensor([scale / passed for scale in scales])
    rows = len(scales)

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        noise = output[0] if isinstance(output, tuple) else output.sample
        if noise.shape[0] != 2 * rows:
            raise RuntimeError(f"expected {2 * rows} rows (guided), the denoiser made {len(noise)}")
        uncond, cond = noise[:rows], noise[rows:]
        # In fp32, whatever the model's dtype: a picture whose scale is the one passed keeps
        # its conditional half exactly, the others their ratio to within fp32's rounding.
        ratio = ratios.to(noise.device).view(-1, *[1] * (noise.ndim - 1))
        mixed = uncond.float() + ratio * (cond.float() - uncond.float())
        rescaled = torch.cat([uncond, mixed.to(noise.dtype)])
        if isinstance(output, tuple):
            return (rescaled, *output[1:])
        return type(output)(sample=rescaled)

    return hook


def _second_call_output(scales: list[float], passed: float) -> Callable[..., Any]:
    """For pipelines that predict the conditional noise c in one call and the unconditional u in
    the next (Chroma): c is kept, and u is replaced by u' with u' + g·(c − u') = u + gᵢ·(c − u)."""
    own = torch.tensor(scales)
    kept: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        noise = output[0] if isinstance(output, tuple) else output.sample
        if noise.shape[0] != len(scales):
            raise RuntimeError(f"expected {len(scales)} rows, the denoiser made {len(noise)}")
        if not kept:  # the conditional call
            kept.append(noise.float())
            return output
        cond = kept.pop()
        g = own.to(noise.device).view(-1, *[1] * (noise.ndim - 1))
        uncond = (noise.float() * (1 - g) + (g - passed) * cond) / (1 - passed)
        rescaled = uncond.to(noise.dtype)
        if isinstance(output, tuple):
            return (rescaled, *output[1:])
        return type(output)(sample=rescaled)

    return hook


def _flux_inputs(scales: list[float]) -> Callable[..., Any]:
    def hook(
        _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        guidance = kwargs.get("guidance")
        if guidance is None:  # schnell: no guidance input
            return None
        own = torch.tensor(scales, device=guidance.device, dtype=guidance.dtype)
        return args, {**kwargs, "guidance": own}

    return hook


def _embedding_inputs(pipe: DiffusionPipeline, scales: list[float], dim: int) -> Callable[..., Any]:
    # A guidance-distilled UNet takes the scale as an embedding (no second half to mix): each
    # picture's own, made as the pipeline makes the one.
    own = pipe.get_guidance_scale_embedding(torch.tensor(scales) - 1, embedding_dim=dim)

    def hook(
        _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        passed = kwargs["timestep_cond"]
        return args, {**kwargs, "timestep_cond": own.to(passed.device, passed.dtype)}

    return hook
