"""GPU check: a full-size random-weight model on CUDA, through the service vs a direct call.

    python -m bench.gpu_check [--sdxl] [--flux] [--fp8] [--throughput [--compile]] [--out DIR]
                              [--dry-run]

Builds full-size SD1.5 (and SDXL with --sdxl) from the real configs in fp16, and with --flux the
wide Flux (released width, 4+8 blocks, bf16; bench/full_size.py) at 1024², 10 steps; calls each
pipeline directly (loaded by the worker's own loader), then starts a private Redis, a worker on
CUDA and the gateway, and runs the same job through HTTP. Prints and writes per-step and
end-to-end times. Before any timing it reports the machine (TF32 settings, power limit, MIG
state) and, per model, each component's storage, the attention kernels its denoiser ran and one
step's FLOPs, so that each step time comes with its dtype, kernel and achieved TFLOP/s
(bench/gpu_facts.py).

--throughput then runs 8 concurrent jobs of each model through workers with batching off, on,
on with the PNGs stored within each job's call (not on the finisher thread), and compiled (with
--compile; compile time is part of the worker's start) beside naive diffusers (one eager call
after another), in pictures per second (bench/throughput.py).

--fp8 then calls each model directly again as the registry's `quantize: fp8` loads it (torchao's
dynamic float8 on tensor cores; refused, with its reason, where the GPU has none) and
`quantize: fp8-storage` (fp8 weights computed in the model's dtype), each step time beside the
model's own dtype's (workers/models/fp8.py).

GPU time is scarce: `--sdxl --throughput --compile` and `--flux --throughput` each fit in about
8 minutes on an H100/H200 with model building; run them as two calls, not one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
import yaml
from redis import Redis

from bench import gpu_facts, throughput
from bench.full_size import build_flux_wide, build_sd15, build_sdxl
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from devstack.processes import (
    start_gateway,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_workers,
)
from devstack.redis_server import RedisServer, free_port
from jobs.settings import REPO_ROOT
from workers.families import pipelines_for
from workers.models.cache import ModelCache
from workers.models.fp8 import QuantizeRefused
from workers.models.loading import load_text_pipeline, resolve_dtype
from workers.stages.chain import run_chain
from workers.stages.outcomes import Made

RUNS = 5


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def direct(registry: ModelRegistry, name: str, size: int, steps: int) -> dict[str, float]:
    """Median wall time and per-step time of the pipeline called directly."""
    entry = registry.models[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(entry.dtype, device)
    pipe = load_text_pipeline(entry, device, dtype, shared={})
    denoiser = pipelines_for(entry.architecture).denoiser_of(pipe)
    # Before timing: what it holds, the attention kernels it runs, one step's FLOPs.
    facts = gpu_facts.model_facts(
        pipe, denoiser, {"prompt": "a test", "height": size, "width": size}
    )
    if entry.architecture == "flux":  # the issue's estimate, beside the counted FLOPs
        config = denoiser.config
        width = config.num_attention_heads * config.attention_head_dim
        tokens = (size // 16) ** 2 + 512  # image tokens (2x2-packed latents) + T5's 512
        blocks = config.num_layers + config.num_single_layers
        facts["flux_estimate_flops_per_step"] = blocks * gpu_facts.flux_block_flops(tokens, width)
    print(name, "facts", facts, flush=True)
    stamps: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        _sync()
        stamps.append(time.perf_counter())
        return tensors

    totals, per_step = [], []
    for run in range(RUNS + 2):  # two warm-up runs
        stamps.clear()
        _sync()
        started = time.perf_counter()
        pipe(
            "a test",
            num_inference_steps=steps,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(run),
            callback_on_step_end=on_step,
        )
        _sync()
        if run >= 2:
            totals.append(time.perf_counter() - started)
            per_step.append(statistics.median(b - a for a, b in itertools.pairwise(stamps)))
    del pipe
    chain = _chain_in_process(registry, name, size, steps)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    step_ms = statistics.median(per_step) * 1e3
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "facts": facts,
        "total_s": statistics.median(totals),
        "step_ms": step_ms,
        "achieved_tflops": gpu_facts.achieved_tflops(facts["denoiser_flops_per_step"], step_ms),
        "workers_chain_in_process_s": chain,
    }


def _chain_in_process(registry: ModelRegistry, name: str, size: int, steps: int) -> float:
    """The worker's own stage code (`run_chain`), called in this process: no queue, no Redis."""
    spec = JobSpec.model_validate(
        {
            "prompt": "a test",
            "width": size,
            "height": size,
            "stages": [{"model": name, "steps": steps}],
        }
    )
    cache = ModelCache(registry)
    times = []
    for seed in range(RUNS + 2):
        checked = check_job(spec.model_copy(update={"seed": seed}), registry, JobLimits(2**24))
        _sync()
        started = time.perf_counter()
        made = run_chain(checked.spec, range(1), None, cache.get, lambda *_: None, "bench")
        _sync()
        assert isinstance(made, Made), made  # a run that failed measures nothing
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:])


def service(url: str, name: str, size: int, steps: int) -> dict[str, float]:
    """Median POST -> succeeded time and the worker's stage time per step."""
    spec = {
        "prompt": "a test",
        "width": size,
        "height": size,
        "stages": [{"model": name, "steps": steps}],
    }
    totals, stage_s = [], []
    with httpx.Client(base_url=url, timeout=120) as client:
        for run in range(RUNS + 1):  # one warm-up job
            started = time.perf_counter()
            job_id = client.post("/jobs", json={**spec, "seed": run}).json()["id"]
            while (envelope := client.get(f"/jobs/{job_id}").json())["status"] in (
                "queued",
                "running",
            ):
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
            assert envelope["status"] == "succeeded", envelope["error"]
            if run >= 1:
                totals.append(elapsed)
                stage_s.append(envelope["trace"][0]["seconds"])
    return {"total_s": statistics.median(totals), "stage_s": statistics.median(stage_s)}


def quantized_direct(
    entry: dict[str, Any], name: str, size: int, steps: int
) -> dict[str, dict[str, Any]]:
    """The model called directly as each `quantize:` loads it (or why it cannot be), with its
    step time over the unquantized one's (`direct`, measured before)."""
    out: dict[str, dict[str, Any]] = {}
    for mode in ("fp8", "fp8-storage"):
        quantized = f"{name}-{mode}"
        registry = ModelRegistry.model_validate(
            {"models": {quantized: {**entry, "quantize": mode, "preload": False}}}
        )
        try:
            out[f"direct_{mode}"] = direct(registry, quantized, size, steps)
        except QuantizeRefused as refused:
            out[f"direct_{mode}"] = {"refused": str(refused)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdxl", action="store_true")
    parser.add_argument("--flux", action="store_true", help="the wide Flux too (see above)")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU and the tiny demo SD1.5: checks the plumbing"
    )
    parser.add_argument("--fp8", action="store_true", help="quantize fp8 and fp8-storage too")
    parser.add_argument("--throughput", action="store_true", help="8 concurrent jobs, see above")
    parser.add_argument("--compile", action="store_true", help="with --throughput: compiled too")
    parser.add_argument(
        "--quiet-worker",
        action="store_true",
        help="also measure a worker whose heartbeat/sweep thread wakes rarely (isolates its cost)",
    )
    args = parser.parse_args()
    assert torch.cuda.is_available() or args.dry_run, "the GPU check needs CUDA"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    size = 256 if args.dry_run else 512
    cases = [("sd15-full", "sd15", build_sd15, size, 30)]
    if args.sdxl:
        cases.append(("sdxl-full", "sdxl", build_sdxl, 1024, 30))
    if args.flux:
        cases.append(("flux-wide", "flux", build_flux_wide, size if args.dry_run else 1024, 10))
    models = {}
    for name, arch, build, _, _ in cases:
        started = time.perf_counter()
        if args.dry_run:
            shutil.copytree(REPO_ROOT / ".models" / f"demo-{arch}", work / name)
        else:
            build(work / name)
        print(f"built {name} in {time.perf_counter() - started:.1f} s", flush=True)
        models[name] = {
            "architecture": arch,
            "source": {"folder": str(work / name)},
            "dtype": "auto" if args.dry_run else ("bf16" if arch == "flux" else "fp16"),
            "device": "auto" if args.dry_run else "cuda",
            "preload": True,
        }
    registry_file = work / "registry.yaml"
    registry_file.write_text(yaml.safe_dump({"models": models}))
    registry = ModelRegistry.load(registry_file)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "environment": gpu_facts.environment(),
    }
    print("environment", results["environment"], flush=True)
    for name, _, _, size, steps in cases:
        results[name] = {
            "size": size,
            "steps": steps,
            "direct": direct(registry, name, size, steps),
        }
        print(name, "direct", results[name]["direct"], flush=True)
    if args.fp8:
        for name, _, _, size, steps in cases:
            results[name].update(quantized_direct(models[name], name, size, steps))
            for mode in ("fp8", "fp8-storage"):
                measured = results[name][f"direct_{mode}"]
                if "step_ms" in measured:
                    base = results[name]["direct"]["step_ms"]
                    measured["step_over_unquantized"] = measured["step_ms"] / base
            print(name, "quantized", {k: v for k, v in results[name].items() if "fp8" in k})
    rates = {n: r["direct"]["achieved_tflops"] for n, r in results.items() if n in models}
    if "flux-wide" in rates and "sdxl-full" in rates:
        # The issue's target: the wide Flux within 2x of the SDXL UNet's achieved rate.
        results["flux_rate_over_sdxl_rate"] = rates["flux-wide"] / rates["sdxl-full"]

    redis_server = RedisServer(work / "redis").start()
    port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "IMAGEGEN_REGISTRY": str(registry_file),
        "IMAGEGEN_MAX_PIXELS": str(1024 * 1024),
    }
    worker = start_worker(env, args.out / "gpu_worker.log")
    gateway = start_gateway(env, port, args.out / "gpu_gateway.log")
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        wait_for_workers(Redis.from_url(redis_server.url), [worker], timeout=300)
        for name, _, _, size, steps in cases:
            measured = service(f"http://127.0.0.1:{port}", name, size, steps)
            direct_s = results[name]["direct"]["total_s"]
            results[name]["service"] = {
                **measured,
                "step_ms": measured["stage_s"] / steps * 1e3,
                "end_to_end_over_direct": measured["total_s"] / direct_s,
                "stage_over_direct": measured["stage_s"] / direct_s,
            }
            print(name, "service", results[name]["service"], flush=True)
        if args.quiet_worker:
            stop(worker)
            quiet = {
                **env,
                "IMAGEGEN_HEARTBEAT_S": "600",
                "IMAGEGEN_HEARTBEAT_TTL_S": "1200",
                "IMAGEGEN_SWEEP_INTERVAL_S": "600",
            }
            worker = start_worker(quiet, args.out / "gpu_worker_quiet.log")
            wait_for_workers(Redis.from_url(redis_server.url), [worker], timeout=300)
            for name, _, _, size, steps in cases:
                measured = service(f"http://127.0.0.1:{port}", name, size, steps)
                results[name]["service_quiet_worker"] = {
                    **measured,
                    "stage_over_direct": measured["stage_s"] / results[name]["direct"]["total_s"],
                }
                print(name, "quiet worker", results[name]["service_quiet_worker"], flush=True)
    finally:
        stop(gateway)
        stop(worker)
        redis_server.stop()
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    if args.throughput:
        for name, _, _, size, steps in cases:
            results[name]["throughput"] = concurrent_jobs(
                registry, models, name, size, steps, work, args.compile
            )
            print(name, "throughput", results[name]["throughput"], flush=True)
            (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


THROUGHPUT_JOBS = 8


def concurrent_jobs(
    registry: ModelRegistry,
    models: dict[str, Any],
    name: str,
    size: int,
    steps: int,
    work: Path,
    compiled: bool,
) -> dict[str, float]:
    """Pictures per second of THROUGHPUT_JOBS concurrent jobs: batching off, on, compiled."""
    spec = {
        "prompt": "a test",
        "width": size,
        "height": size,
        "stages": [{"model": name, "steps": steps}],
    }
    registry_file = work / "registry.yaml"
    variants: dict[str, dict[str, str]] = {
        "batching_off": {"IMAGEGEN_BATCH_WINDOW_MS": "0"},
        "batching_on": {"IMAGEGEN_BATCH_WINDOW_MS": "25"},
        # PNGs encoded and stored within each job's call (the default does it on a thread)
        "batching_on_finish_inline": {
            "IMAGEGEN_BATCH_WINDOW_MS": "25",
            "IMAGEGEN_FINISH_IN_BACKGROUND": "false",
        },
    }
    if compiled:
        entry = {**models[name], "compile": True, "compile_sizes": [[size, size]]}
        compiled_file = work / f"registry-{name}-compiled.yaml"
        compiled_file.write_text(yaml.safe_dump({"models": {name: entry}}))
        variants["batching_on_compiled"] = {
            "IMAGEGEN_BATCH_WINDOW_MS": "25",
            "IMAGEGEN_REGISTRY": str(compiled_file),
            "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        }
    found = throughput.service(
        registry_file, work, spec, THROUGHPUT_JOBS, variants, rounds=1, start_timeout_s=900
    )
    found["naive_diffusers"] = throughput.naive(registry, spec, THROUGHPUT_JOBS)
    found["batched_over_naive"] = found["batching_on"] / found["naive_diffusers"]
    return found


if __name__ == "__main__":
    raise SystemExit(main())
