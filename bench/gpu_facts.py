"""What a GPU figure was measured on, reported before any timing: the machine (torch, CUDA, the
GPU, its TF32 settings, power limit and MIG state) and each model (the storage of each
component, the attention kernels its denoiser really ran, and the FLOPs of one denoising step,
counted by torch's FlopCounterMode, so that a step time becomes an achieved rate).

An H200 run once reached ~60 TFLOP/s on the wide Flux: what fp32 without TF32 reaches, not
bf16, and nothing said which. Every figure gpu_check prints now carries these facts.

FlopCounterMode counts CUDA's fused attention kernels (flash, efficient, cuDNN) but not the CPU
flash kernel: a dry run's FLOPs leave attention out (the demo Flux counted 41 M a step against
an estimate of 189 M with attention), a GPU run's include it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from typing import Any

import torch
from diffusers import DiffusionPipeline
from torch.utils.flop_counter import FlopCounterMode

from workers.models.attention import watch_first_call
from workers.models.cache import components_held

_SMI_FIELDS = (
    "name", "power.limit", "power.max_limit", "power.draw", "mig.mode.current",
    "clocks.max.sm", "memory.total",
)  # fmt: skip


def environment() -> dict[str, Any]:
    """torch's build and settings, and (on CUDA) the GPU as nvidia-smi reports it."""
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        # TF32: whether fp32 matmuls and convolutions may run on tensor cores (rounded).
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "sdpa_enabled": {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
        },
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
        facts["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        facts["nvidia_smi"] = nvidia_smi()
    return facts


def nvidia_smi() -> dict[str, str]:
    """Power limit, MIG mode and clocks in nvidia-smi's words ("[N/A]" where it has none)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"error": "nvidia-smi not found"}
    done = subprocess.run(
        [smi, f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr.strip()[:300]}
    first = done.stdout.strip().splitlines()[0]
    return dict(zip(_SMI_FIELDS, (v.strip() for v in first.split(",")), strict=False))


def model_facts(
    pipe: DiffusionPipeline, denoiser: torch.nn.Module, call: dict[str, Any]
) -> dict[str, Any]:
    """One denoising step of `pipe(**call)` observed: each component's storage, the attention
    kernels its denoiser ran, and the denoiser's FLOPs in that step (every call of it in the
    step: classifier-free guidance's two halves are one batched call or two)."""
    held = {name: h.storage for name, h in components_held(pipe).items()}
    calls = []
    kernels: list[Counter[str]] = []
    watch_first_call(denoiser, kernels.append)  # the denoiser's, not the VAE's or encoders'
    hook = denoiser.register_forward_hook(lambda *_: calls.append(1))
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            pipe(**{**call, "num_inference_steps": 1})
    finally:
        hook.remove()
    by_module = counter.get_flop_counts()
    name = type(denoiser).__name__
    flops = sum(by_module.get(name, {}).values())
    return {
        "storage": held,
        "denoiser_attention_kernels": dict(kernels[0]) if kernels else {},
        "denoiser_calls_per_step": len(calls),
        "denoiser_flops_per_step": int(flops),
    }


def achieved_tflops(flops_per_step: int, step_ms: float) -> float:
    return flops_per_step / (step_ms / 1e3) / 1e12


def flux_block_flops(tokens: int, width: int) -> float:
    """The estimate the issue started from: one Flux block's matmuls (24·N·d²) and attention
    (4·N²·d) at N tokens, width d."""
    return 24 * tokens * width**2 + 4 * tokens**2 * width
