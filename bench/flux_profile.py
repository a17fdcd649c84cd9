"""One denoising step of a wide Flux transformer against the SDXL UNet's achieved FLOP rate.

    python -m bench.flux_profile [--double 4 --single 8] [--size 1024] [--out DIR] [--dry-run]

Issue 15 found a 1024² Flux hires step at ~10 % of the GPU's bf16 peak. This measures, on random
weights and in one run: the FLOPs of one forward (torch's FlopCounterMode counts every matmul and
attention), the step time, hence the achieved TFLOP/s, for the SDXL UNet at 1024² with CFG and
for Flux at full width (3072, 24 heads of 128) with the given number of blocks; the Flux step's
time against the one the SDXL rate predicts (target: within 2×); the dtypes its parameters hold;
the attention backends enabled; and the top operations by device time (torch.profiler). Then the
same transformer inside the worker's own pipeline (bench/full_size.py's wide Flux, loaded by
workers/models/loading.py): its step time against the transformer's alone, the host syncs per step
(torch's sync debug mode), the text encoding and the VAE decode. Written as JSON. `--dry-run`
runs the same code on the CPU with the demo models' configs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxTransformer2DModel, UNet2DConditionModel
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from bench.full_size import build_flux_wide
from contract.registry import ModelRegistry
from jobs.settings import REPO_ROOT
from workers.models.loading import load_text_pipeline

RUNS = 10


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(step: Callable[[], Any]) -> float:
    """Median seconds of one call, after two warm-up calls."""
    times = []
    for run in range(RUNS + 2):
        _sync()
        started = time.perf_counter()
        step()
        _sync()
        if run >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def flops(step: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def top_ops(step: Callable[[], Any], limit: int = 12) -> list[dict[str, Any]]:
    activities = [ProfilerActivity.CPU]
    key = "self_cpu_time_total"
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
        key = "self_device_time_total"
    with profile(activities=activities) as prof:
        step()
        _sync()
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    return [
        {"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key, 0) / 1e3, 3)}
        for e in rows[:limit]
    ]


def sdxl_unet(dry_run: bool, device: str, dtype: torch.dtype) -> tuple[Callable[[], Any], str]:
    if dry_run:
        unet = UNet2DConditionModel.from_pretrained(REPO_ROOT / ".models" / "demo-sdxl" / "unet")
        size, context = 64, unet.config.cross_attention_dim
    else:
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            use_linear_projection=True,
        )  # fmt: skip
        size, context = 1024, 2048
    unet = unet.to(device, dtype).eval()
    latents = torch.randn(2, 4, size // 8, size // 8, device=device, dtype=dtype)  # with CFG
    text = torch.randn(2, 77, context, device=device, dtype=dtype)
    pooled = (
        unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    )
    added = {
        "text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
        "time_ids": torch.randn(2, 6, device=device, dtype=dtype),
    }
    t = torch.tensor([500.0, 500.0], device=device)

    def step() -> Any:
        with torch.inference_mode():
            return unet(latents, t, encoder_hidden_states=text, added_cond_kwargs=added)

    return step, f"SDXL UNet {size}² with CFG (batch 2)"


def wide_flux(
    dry_run: bool, device: str, dtype: torch.dtype, double: int, single: int, size: int
) -> tuple[Callable[[], Any], str, FluxTransformer2DModel]:
    if dry_run:
        model = FluxTransformer2DModel.from_pretrained(
            REPO_ROOT / ".models" / "demo-flux" / "transformer"
        )
        size = 64
    else:
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
            pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        )  # fmt: skip
    model = model.to(device, dtype).eval()
    config = model.config
    tokens = (size // 16) ** 2  # 8x VAE, then 2x2 patches
    hidden = torch.randn(1, tokens, config.in_channels, device=device, dtype=dtype)
    text = torch.randn(1, 512, config.joint_attention_dim, device=device, dtype=dtype)
    pooled = torch.randn(1, config.pooled_projection_dim, device=device, dtype=dtype)
    side = size // 16
    img_ids = torch.zeros(side, side, 3, device=device)
    img_ids[..., 1] += torch.arange(side, device=device)[:, None]
    img_ids[..., 2] += torch.arange(side, device=device)[None, :]
    img_ids = img_ids.reshape(-1, 3)
    txt_ids = torch.zeros(512, 3, device=device)
    t = torch.tensor([0.5], device=device, dtype=dtype)
    guidance = torch.tensor([3.5], device=device, dtype=dtype) if config.guidance_embeds else None

    def step() -> Any:
        with torch.inference_mode():
            return model(
                hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                timestep=t, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
            )  # fmt: skip

    blocks = f"{config.num_layers}+{config.num_single_layers}"
    what = f"Flux {size}² ({tokens} image tokens), {blocks} blocks"
    return step, what, model


def in_pipeline(
    dry_run: bool, device: str, double: int, single: int, size: int, steps: int = 8
) -> dict[str, Any]:
    """The wide Flux in the worker's pipeline: where a step's time goes beyond the transformer."""
    if dry_run:
        folder, size = REPO_ROOT / ".models" / "demo-flux", 64
    else:
        folder = Path(tempfile.mkdtemp(prefix="flux-wide-"))
        build_flux_wide(folder, double, single)
    entry = ModelRegistry.model_validate(
        {"models": {"flux": {"architecture": "flux", "source": {"folder": str(folder)},
                             "dtype": "auto" if dry_run else "bf16", "device": device}}}
    ).models["flux"]  # fmt: skip
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipe = load_text_pipeline(entry, device, dtype, shared={})
    stamps: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        stamps.append(time.perf_counter())
        return tensors

    def call(n: int, output: str = "latent") -> Any:
        stamps.clear()
        return pipe("a lighthouse at dusk", num_inference_steps=n, height=size, width=size,
                    output_type=output, callback_on_step_end=on_step,
                    generator=torch.Generator("cpu").manual_seed(0))  # fmt: skip

    call(2)  # warm-up
    found: dict[str, Any] = {"steps": steps, "size": size}
    found["step_ms"] = timed_median(lambda: call(steps), lambda: _intervals(stamps)) * 1e3
    found["call_latent_ms"] = timed(lambda: call(steps)) * 1e3
    found["call_pt_ms"] = timed(lambda: call(steps, "pt")) * 1e3
    found["vae_decode_and_postprocess_ms"] = found["call_pt_ms"] - found["call_latent_ms"]
    found["encode_prompt_ms"] = timed(lambda: pipe.encode_prompt("a lighthouse", None)) * 1e3
    found["module_dtypes"] = {
        name: sorted({str(p.dtype) for p in module.parameters()})
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
    if device == "cuda":
        # Each host sync stalls the CPU until the GPU drains: counted for 2 and 2+steps steps.
        counts = []
        for n in (2, 2 + steps):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    call(n)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            counts.append(sum("synchroniz" in str(w.message) for w in caught))
        found["host_syncs_per_step"] = (counts[1] - counts[0]) / steps
        found["host_syncs_per_call_outside_steps"] = counts[0]
    return found  # the pipeline goes with this frame


def _intervals(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


def timed_median(run: Callable[[], Any], measure: Callable[[], float]) -> float:
    """The median of what `measure` reads after each of RUNS calls of `run` (after a warm-up)."""
    run()
    values = []
    for _ in range(RUNS):
        run()
        _sync()
        values.append(measure())
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flux_profile")
    parser.add_argument("--double", type=int, default=4, help="double-stream blocks (real: 19)")
    parser.add_argument("--single", type=int, default=8, help="single-stream blocks (real: 38)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--dry-run", action="store_true", help="CPU, the demo models' configs")
    args = parser.parse_args()
    assert torch.cuda.is_available() or args.dry_run, "the profile needs CUDA"
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if device == "cuda":
        results["sdpa_backends"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "memory_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
        }
    unet_step, unet_what = sdxl_unet(
        args.dry_run, device, torch.float16 if device == "cuda" else torch.float32
    )
    unet_flops, unet_s = flops(unet_step), timed(unet_step)
    rate = unet_flops / unet_s
    results["sdxl_unet"] = {"what": unet_what, "tflop": unet_flops / 1e12, "step_ms": unet_s * 1e3,
                            "achieved_tflops": rate / 1e12}  # fmt: skip
    del unet_step
    if device == "cuda":
        torch.cuda.empty_cache()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    flux_step, flux_what, flux = wide_flux(
        args.dry_run, device, dtype, args.double, args.single, args.size
    )
    flux_flops, flux_s = flops(flux_step), timed(flux_step)
    expected = flux_flops / rate
    results["flux"] = {
        "what": flux_what,
        "tflop": flux_flops / 1e12,
        "step_ms": flux_s * 1e3,
        "achieved_tflops": flux_flops / flux_s / 1e12,
        "expected_ms_at_sdxl_rate": expected * 1e3,
        "over_expected": flux_s / expected,
        "parameter_dtypes": sorted({str(p.dtype) for p in flux.parameters()}),
        "top_ops": top_ops(flux_step),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flux_profile.json").write_text(json.dumps(results, indent=2))
    del flux_step, flux
    if device == "cuda":
        torch.cuda.empty_cache()
    pipeline = in_pipeline(args.dry_run, device, args.double, args.single, args.size)
    pipeline["step_over_transformer_alone"] = pipeline["step_ms"] / results["flux"]["step_ms"]
    results["flux_in_pipeline"] = pipeline
    (args.out / "flux_profile.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
