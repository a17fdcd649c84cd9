"""`make bench`: the service's overheads on the demo models, measured in one run.

    P1  POST -> succeeded (queue + worker + SSE) / the same pipeline call made directly
    P3  three resident models in turn: reloads, and warm job / direct call
    P2  POST /jobs admissions per second / raw RQ enqueue per second (see bench.admission)
    P4  worker RSS with txt2img + img2img (+ refiner) of one model / RSS with one pipeline
    P5  Redis memory per finished job (record + PNG), what the result TTL keeps per job; and
        with the PNGs in an S3 bucket instead (bench.pictures)
    P6  8 concurrent jobs of one shape: images/s with cross-job batching on / off
    P7  the same for jobs of two stages (base, then a 2x pixel hires fix), both stages batched
    P10 P6's jobs inpainting (a picture and a mask each): batching on / off
    P8  POST /jobs latency waiting for a Redis replica (WAIT) / not; Sentinel failover time
        (bench.replication)
    P9  a Flux transformer at released width held in fp8, in GGUF Q8_0 / in bf16: resident
        bytes, step time (bench.quantized)

Direct and service runs are interleaved so that drift on a noisy machine hits both alike.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from PIL import Image, ImageDraw
from redis import Redis

from bench import admission, pictures, quantized, replication, throughput
from contract.registry import ModelRegistry
from demo.models import ensure_built
from devstack.processes import (
    start_gateway,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_workers,
)
from devstack.redis_server import RedisServer, free_port
from jobs.presence import live_workers
from jobs.redis_keys import image_key, job_key
from jobs.settings import REPO_ROOT
from workers.models.loading import load_text_pipeline

RUNS = 10
P1_SPEC = {
    "prompt": "a lighthouse",
    "seed": 1,
    "width": 320,
    "height": 320,
    "stages": [{"model": "demo-sd15", "steps": 20, "guidance_scale": 7.0}],
}
P3_MODELS = {"demo-sd15": 7.0, "demo-sdxl": 7.0, "demo-flux": 3.5}


def spec_for(model: str, guidance: float) -> dict[str, Any]:
    return {**P1_SPEC, "stages": [{"model": model, "steps": 20, "guidance_scale": guidance}]}


class Direct:
    """The same pipelines, called in this process."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.pipes = {
            name: load_text_pipeline(registry.models[name], "cpu", torch.float32, shared={})
            for name in P3_MODELS
        }

    def run(self, spec: dict[str, Any]) -> float:
        stage = spec["stages"][0]
        kwargs: dict[str, Any] = {
            "prompt": spec["prompt"],
            "num_inference_steps": stage["steps"],
            "guidance_scale": stage["guidance_scale"],
            "height": spec["height"],
            "width": spec["width"],
            "generator": [torch.Generator("cpu").manual_seed(spec["seed"])],
        }
        started = time.perf_counter()
        self.pipes[stage["model"]](**kwargs)
        return time.perf_counter() - started


def through_service(client: httpx.Client, spec: dict[str, Any]) -> float:
    """POST, then follow the job's SSE stream to its end."""
    started = time.perf_counter()
    job_id = client.post("/jobs", json=spec).json()["id"]
    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"status":"succeeded"' in line:
                return time.perf_counter() - started
    raise RuntimeError(f"job {job_id} did not succeed")


P5_JOBS = 10
P5_SPEC = {**P1_SPEC, "width": 512, "height": 512, "stages": [{"model": "demo-sd15", "steps": 4}]}


def redis_memory_per_job(client: httpx.Client, redis: Redis) -> dict[str, float]:
    """Bytes Redis holds per finished 512² job: `used_memory` before and after, and the two
    parts it is made of (the PNG, the job's record)."""
    before = int(redis.info("memory")["used_memory"])
    ids = pictures.finish(client, P5_SPEC, P5_JOBS)
    after = int(redis.info("memory")["used_memory"])
    png = statistics.mean(int(redis.strlen(image_key(i, 0))) for i in ids)
    record = statistics.mean(int(redis.memory_usage(job_key(i)) or 0) for i in ids)
    return {"per_job": (after - before) / P5_JOBS, "png": png, "record": record}


def interleaved(direct: Direct, client: httpx.Client, spec: dict[str, Any]) -> tuple[float, float]:
    d, s = [], []
    for _ in range(2):  # warm-up
        direct.run(spec)
        through_service(client, spec)
    for _ in range(RUNS):
        d.append(direct.run(spec))
        s.append(through_service(client, spec))
    return statistics.median(d), statistics.median(s)


RSS_PROBE = """
import json, sys, psutil, torch
from pathlib import Path
from contract.registry import ModelRegistry
from workers.models.cache import ModelCache
torch.set_num_threads(1)
cache = ModelCache(ModelRegistry.load(Path(sys.argv[1])))
rss = lambda: psutil.Process().memory_info().rss
out = {}
base = cache.get(sys.argv[2]); out["one"] = rss()
base.image; out["with_img2img"] = rss()
if len(sys.argv) > 3:
    cache.get(sys.argv[3]); out["with_refiner"] = rss()
print(json.dumps(out))
"""


def rss(registry: Path, *models: str) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(registry), *models],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


P6_JOBS = 8
P6_SPEC = {**P1_SPEC, "width": 128, "height": 128, "stages": [{"model": "demo-sd15", "steps": 20}]}
P7_HIRES = {"model": "demo-sd15", "mode": "hires", "handoff": "pixel", "scale": 2, "steps": 10,
            "denoise": 0.5}  # fmt: skip
P7_SPEC = {**P6_SPEC, "stages": [P6_SPEC["stages"][0], P7_HIRES]}


def _png_b64(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def p10_spec() -> dict[str, object]:
    """P6's job inpainting a square of its 128² picture (strength 0.9: 18 of 20 steps)."""
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 95, 95), fill=255)
    picture = Image.new("RGB", (128, 128), (90, 140, 200))
    return {**P6_SPEC, "init_image": _png_b64(picture), "mask": _png_b64(mask), "strength": 0.9}


def main() -> int:
    ensure_built(REPO_ROOT / ".models")
    registry_file = REPO_ROOT / "deploy" / "registry.demo.yaml"
    registry = ModelRegistry.load(registry_file)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    server = RedisServer(work / "redis").start()
    redis = Redis.from_url(server.url)
    port = free_port()
    env = {"REDIS_URL": server.url, "IMAGEGEN_REGISTRY": str(registry_file)}
    worker = start_worker(env, work / "worker.log")
    gateway = start_gateway(env, port, work / "gateway.log")
    rows: list[tuple[str, str, str, str]] = []
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        wait_for_workers(redis, [worker])
        direct = Direct(registry)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            d, s = interleaved(direct, client, P1_SPEC)
            rows.append(
                (
                    "P1 end-to-end / direct (demo-sd15, 320px, 20 steps)",
                    f"{s:.3f} s / {d:.3f} s",
                    f"{s / d:.3f}",
                    "<= 1.03",
                )
            )

            loads_before = live_workers(redis)[0].loads
            ratios, warm = [], []
            for _ in range(2):  # warm-up round
                for model, guidance in P3_MODELS.items():
                    through_service(client, spec_for(model, guidance))
            per_model: dict[str, list[tuple[float, float]]] = {m: [] for m in P3_MODELS}
            for _ in range(RUNS // 2):
                for model, guidance in P3_MODELS.items():  # sd15, sdxl, flux, sd15, ...
                    spec = spec_for(model, guidance)
                    per_model[model].append((direct.run(spec), through_service(client, spec)))
            for runs in per_model.values():
                dm = statistics.median(r[0] for r in runs)
                sm = statistics.median(r[1] for r in runs)
                ratios.append(sm / dm)
                warm.append(sm)
            time.sleep(2.5)  # one presence period, so the count below is current
            reloads = live_workers(redis)[0].loads - loads_before
            rows.append(
                ("P3 reloads while alternating sd15/sdxl/flux", str(reloads), str(reloads), "0")
            )
            rows.append(
                (
                    "P3 warm job / direct (median over the three models)",
                    " ".join(f"{r:.3f}" for r in ratios),
                    f"{statistics.median(ratios):.3f}",
                    "<= 1.05",
                )
            )
            memory = redis_memory_per_job(client, redis)
            rows.append(
                (
                    "P5 Redis per finished 512² job: all / PNG / record",
                    f"{memory['per_job'] / 1024:.0f} / {memory['png'] / 1024:.0f} / "
                    f"{memory['record'] / 1024:.1f} KiB",
                    f"{memory['per_job'] / 1024:.0f} KiB",
                    "TTL'd (docs/operations.md)",
                )
            )
    finally:
        stop(gateway)
        stop(worker)
        server.stop()

    # More jobs than P5: a few KiB of fixed noise (client buffers) spread thinner.
    in_s3 = pictures.redis_per_job_with_s3(registry_file, work, P5_SPEC, 3 * P5_JOBS)
    rows.append(
        (
            "P5 with pictures in S3: Redis per finished 512² job (all / record); PNG in bucket",
            f"{in_s3['per_job'] / 1024:.1f} / {in_s3['record'] / 1024:.1f} KiB; "
            f"{in_s3['png'] / 1024:.0f} KiB",
            f"{in_s3['per_job'] / 1024:.1f} KiB",
            "< 5 KiB",
        )
    )

    variants = {"off": {"IMAGEGEN_BATCH_WINDOW_MS": "0"}, "on": {"IMAGEGEN_BATCH_WINDOW_MS": "25"}}
    p6 = throughput.service(registry_file, work, P6_SPEC, P6_JOBS, variants)
    p6["naive"] = throughput.naive(registry, P6_SPEC, P6_JOBS)
    rows.append(
        (
            f"P6 images/s, {P6_JOBS} concurrent jobs (sd15, 128px, 20 steps): batching on / off",
            f"{p6['on']:.2f} / {p6['off']:.2f} (naive diffusers {p6['naive']:.2f})",
            f"{p6['on'] / p6['off']:.3f}",
            ">= 1.3",
        )
    )
    p10 = throughput.service(registry_file, work, p10_spec(), P6_JOBS, variants)
    rows.append(
        (
            f"P10 images/s, {P6_JOBS} concurrent inpainting jobs (sd15 128px, 20 steps, strength "
            "0.9, a mask each): batching on / off",
            f"{p10['on']:.2f} / {p10['off']:.2f}",
            f"{p10['on'] / p10['off']:.3f}",
            ">= 1.3",
        )
    )
    p7 = throughput.service(registry_file, work, P7_SPEC, P6_JOBS, variants)
    rows.append(
        (
            f"P7 images/s, {P6_JOBS} concurrent jobs (sd15 128px 20 steps, hires 2x 10 steps): "
            "batching on / off",
            f"{p7['on']:.2f} / {p7['off']:.2f}",
            f"{p7['on'] / p7['off']:.3f}",
            ">= 1.3",
        )
    )

    if shutil.which("wrk") is None:
        # The rest needs nothing but this repository; P2 needs a load generator.
        print("P2 skipped: it needs wrk (apt-get install -y wrk)", file=sys.stderr)
        rows.append(("P2 POST /jobs / raw Queue.enqueue", "skipped: no wrk", "-", ">= 0.5"))
    else:
        p2 = admission.measure()
        rows.append(
            (
                f"P2 POST /jobs / raw Queue.enqueue ({admission.CONNECTIONS} connections)",
                f"{p2['admissions_per_s']:.0f} / {p2['raw_enqueue_per_s']:.0f} per s",
                f"{p2['admissions_per_s'] / p2['raw_enqueue_per_s']:.3f}",
                ">= 0.5",
            )
        )
        rows.append(
            (
                "P2 admission latency p50 / p99 (64 connections; 4 connections)",
                f"{p2['p50_ms']:.0f}/{p2['p99_ms']:.0f}; "
                f"{p2['light_p50_ms']:.1f}/{p2['light_p99_ms']:.1f} ms",
                f"{p2['p99_ms']:.0f} ms",
                "p99 < 50 ms",
            )
        )
    sd = rss(registry_file, "demo-sd15")
    rows.append(
        (
            "P4 RSS sd15 txt2img+img2img / txt2img",
            f"{sd['with_img2img'] / 2**20:.1f} / {sd['one'] / 2**20:.1f} MiB",
            f"{sd['with_img2img'] / sd['one']:.4f}",
            "<= 1.01",
        )
    )
    xl = rss(registry_file, "demo-sdxl", "demo-sdxl-refiner")
    rows.append(
        (
            "P4 RSS sdxl txt2img+img2img / txt2img",
            f"{xl['with_img2img'] / 2**20:.1f} / {xl['one'] / 2**20:.1f} MiB",
            f"{xl['with_img2img'] / xl['one']:.4f}",
            "<= 1.01",
        )
    )
    rows.append(
        (
            "P4 RSS sdxl + refiner (shared VAE, text_encoder_2) / sdxl",
            f"{xl['with_refiner'] / 2**20:.1f} / {xl['one'] / 2**20:.1f} MiB",
            f"{xl['with_refiner'] / xl['one']:.4f}",
            "refiner UNet only",
        )
    )

    p8 = replication.measure()
    rows.append(
        (
            "P8 POST /jobs p50 waiting for 1 replica / primary only",
            f"{p8['replicated_p50_ms']:.2f} / {p8['alone_p50_ms']:.2f} ms",
            f"{p8['replicated_p50_ms'] / p8['alone_p50_ms']:.3f}",
            "reported",
        )
    )
    rows.append(
        (
            "P8 Sentinel failover: SIGKILL to a write on the new primary",
            f"{p8['failover_s']:.2f} s",
            "-",
            "reported",
        )
    )

    p9 = quantized.measure()
    rows.append(
        (
            "P9 Flux blocks at width 3072: resident fp8 / bf16",
            f"{p9['fp8_bytes'] / 2**20:.0f} / {p9['bf16_bytes'] / 2**20:.0f} MiB",
            f"{p9['fp8_bytes'] / p9['bf16_bytes']:.3f}",
            "<= 0.55",
        )
    )
    rows.append(
        (
            "P9 the same: step time fp8 / bf16 (CPU)",
            f"{p9['fp8_step_s']:.2f} / {p9['bf16_step_s']:.2f} s",
            f"{p9['fp8_step_s'] / p9['bf16_step_s']:.3f}",
            "reported",
        )
    )

    rows.append(
        (
            "P9 the same in GGUF Q8_0: resident Q8_0 / bf16",
            f"{p9['q8_0_bytes'] / 2**20:.0f} / {p9['bf16_bytes'] / 2**20:.0f} MiB",
            f"{p9['q8_0_bytes'] / p9['bf16_bytes']:.3f}",
            "<= 0.6",
        )
    )
    rows.append(
        (
            "P9 the same: step time Q8_0 / bf16 (CPU)",
            f"{p9['q8_0_step_s']:.2f} / {p9['bf16_step_s']:.2f} s",
            f"{p9['q8_0_step_s'] / p9['bf16_step_s']:.3f}",
            "reported",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'measured':>24}  {'ratio':>8}  target")
    for name, measured, ratio, target in rows:
        print(f"{name:<{width}}  {measured:>24}  {ratio:>8}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
