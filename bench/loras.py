"""The per-job cost of LoRAs on a resident model (CPU, demo models), measured in one run.

    python -m bench.loras

A LoRA is loaded once per model (PEFT adapter), then switched on for a stage and off after it;
jobs alternate with and without one, so every LoRA job pays the switch both ways.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from demo.loras import build_sd15_lora
from demo.models import ensure_built
from jobs.settings import REPO_ROOT
from workers.models.cache import ModelCache
from workers.stages.chain import Components, run_chain
from workers.stages.outcomes import Made

RUNS = 10


def main() -> int:
    models = REPO_ROOT / ".models"
    ensure_built(models, ("demo-sd15",))
    lora = build_sd15_lora(models, Path(tempfile.mkdtemp()) / "bench.safetensors")
    registry = ModelRegistry.model_validate(
        {
            "models": {
                "m": {"architecture": "sd15", "source": {"folder": str(models / "demo-sd15")}}
            },
            "loras": {"l": {"architecture": "sd15", "file": str(lora)}},
        }
    )
    cache = ModelCache(registry)

    def job(uses: list[dict[str, Any]]) -> float:
        body = {"prompt": "p", "seed": 1, "width": 128, "height": 128}
        stages = [{"model": "m", "steps": 10, "loras": uses}]
        spec = check_job(
            JobSpec.model_validate({**body, "stages": stages}), registry, JobLimits()
        ).spec
        started = time.perf_counter()
        made = run_chain(
            spec,
            range(1),
            None,
            cache.get,
            lambda *_: None,
            "bench",
            Components(loras=registry.loras),
        )
        assert isinstance(made, Made), made  # a run that failed measures nothing
        return time.perf_counter() - started

    job([])  # warm
    first = job([{"name": "l"}])
    plain, with_lora = [], []
    for _ in range(RUNS):
        plain.append(job([]))
        with_lora.append(job([{"name": "l", "weight": 0.7}]))
    p, w = statistics.median(plain), statistics.median(with_lora)
    print(f"first LoRA job (loads the adapter): {first:.3f} s")
    print(f"job without / with a LoRA (alternating, median of {RUNS}): {p:.3f} s / {w:.3f} s")
    print(f"ratio with / without: {w / p:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
