"""What each component a stage can load costs per job and per step, against the same job
without it (CPU, demo models), measured in one run.

    python -m bench.components

Each pair of jobs runs alternately (without, with), ten times, after a warm-up that loads
everything; a job's time is split into its fixed part and its steps by running it at two step
counts (per step = (t(20 steps) - t(4 steps)) / 16). A VAE costs at the ends (decode, encode),
an embedding in the prompt's encoding, Clip skip nothing measurable, a LoRA, a ControlNet and
an IP-Adapter every step (the IP-Adapter's picture is encoded once per job too); the ratios say
so.
"""

from __future__ import annotations

import base64
import io
import statistics
import time
from typing import Any

from PIL import Image

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from demo.models import ensure_built
from jobs.settings import REPO_ROOT
from workers.models.cache import ModelCache
from workers.stages.chain import Components, run_chain
from workers.stages.outcomes import Made

RUNS = 10
STEPS = (4, 20)


def _edges() -> str:
    picture = Image.new("RGB", (128, 128), (0, 0, 0))
    picture.paste((255, 255, 255), (32, 32, 96, 96))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


EDGES = _edges()


def registry() -> ModelRegistry:
    models = REPO_ROOT / ".models"
    ensure_built(
        models,
        ("demo-sd15", "demo-vaes", "demo-embeddings", "demo-loras", "demo-controlnets",
         "demo-ip-adapters"),
    )  # fmt: skip
    return ModelRegistry.model_validate(
        {
            "models": {
                "m": {"architecture": "sd15", "source": {"folder": str(models / "demo-sd15")}}
            },
            "vaes": {
                "v": {"latent_space": "sd1",
                      "file": str(models / "demo-vaes" / "demo-sd15-vae.safetensors")}
            },
            "embeddings": {
                "style": {"architecture": "sd15",
                          "file": str(models / "demo-embeddings" / "demo-sd15-emb.safetensors")}
            },
            "loras": {
                "l": {"architecture": "sd15",
                      "file": str(models / "demo-loras" / "demo-sd15-lora.safetensors")}
            },
            "controlnets": {
                "c": {"architecture": "sd15",
                      "file": str(models / "demo-controlnets" / "demo-sd15-canny")}
            },
            "ip_adapters": {
                "ip": {"architecture": "sd15",
                       "file": str(models / "demo-ip-adapters" / "demo-sd15-ip.safetensors"),
                       "image_encoder": str(models / "demo-ip-adapters" / "image_encoder")}
            },
        }
    )  # fmt: skip


# The component under test, as what it adds to the plain job: (stage fields, job fields).
WITH: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "vae": ({"vae": "v"}, {}),
    "embedding": ({}, {"prompt": "a lighthouse, style"}),
    "clip skip 2": ({"clip_skip": 2}, {}),
    "lora": ({"loras": [{"name": "l", "weight": 0.7}]}, {}),
    "controlnet": ({"controlnets": [{"name": "c", "image": EDGES, "module": "canny"}]}, {}),
    "ip-adapter": ({"ip_adapters": [{"name": "ip", "image": EDGES}]}, {}),
}


def main() -> int:
    reg = registry()
    cache = ModelCache(reg)
    components = Components.of(cache)

    def job(steps: int, stage: dict[str, Any], fields: dict[str, Any]) -> float:
        body = {"prompt": "a lighthouse", "seed": 1, "width": 128, "height": 128, **fields}
        stages = [{"model": "m", "steps": steps, **stage}]
        spec = check_job(JobSpec.model_validate({**body, "stages": stages}), reg, JobLimits()).spec
        started = time.perf_counter()
        made = run_chain(spec, range(1), None, cache.get, lambda *_: None, "bench", components)
        assert isinstance(made, Made), made  # a run that failed measures nothing
        return time.perf_counter() - started

    for stage, fields in WITH.values():  # warm: every file read, every model loaded
        job(2, stage, fields)
    print(
        f"demo-sd15, 128x128, median of {RUNS} alternating runs at {STEPS[0]} and {STEPS[1]} steps"
    )
    print(f"{'component':<12} {'job with/without':>17} {'per step with/without':>22}")
    for name, (stage, fields) in WITH.items():
        times: dict[tuple[bool, int], list[float]] = {}
        for _ in range(RUNS):
            for steps in STEPS:
                times.setdefault((False, steps), []).append(job(steps, {}, {}))
                times.setdefault((True, steps), []).append(job(steps, stage, fields))
        median = {k: statistics.median(v) for k, v in times.items()}
        step = {
            used: (median[(used, STEPS[1])] - median[(used, STEPS[0])]) / (STEPS[1] - STEPS[0])
            for used in (False, True)
        }
        whole = median[(True, STEPS[1])] / median[(False, STEPS[1])]
        print(f"{name:<12} {whole:>17.3f} {step[True] / step[False]:>22.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
