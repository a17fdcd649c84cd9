"""Pictures made in a shared call against the same jobs run alone: how many are byte-identical,
and how far the others are.

    python -m bench.batch_identity

Four jobs (demo models, 128², 20 steps, distinct prompts and seeds) with equal and with
different guidance scales, for SD1.5, SDXL and Flux, run by the worker's stage code in this
process: once together, once each alone.
"""

from __future__ import annotations

import numpy as np

from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from jobs.settings import REPO_ROOT
from workers.models.cache import ModelCache
from workers.stages.chain import Member, run_group

CASES = [
    ("demo-sd15", (7.0, 7.0, 7.0, 7.0)),
    ("demo-sd15", (7.0, 3.0, 5.0, 9.0)),
    ("demo-sdxl", (7.0, 3.0, 5.0, 9.0)),
    ("demo-flux", (3.5, 1.5, 5.0, 2.0)),
]


def job(registry: ModelRegistry, model: str, guidance: float, k: int) -> Member:
    body = {"prompt": f"picture {k}", "seed": 10 + k, "width": 128, "height": 128,
            "stages": [{"model": model, "steps": 20, "guidance_scale": guidance}]}  # fmt: skip
    spec = check_job(JobSpec.model_validate(body), registry, JobLimits()).spec
    return Member(str(k), spec, lambda *_: None)


def main() -> int:
    registry = ModelRegistry.load(REPO_ROOT / "deploy" / "registry.demo.yaml")
    cache = ModelCache(registry)
    for model, scales in CASES:
        together = [job(registry, model, g, k) for k, g in enumerate(scales)]
        run_group(together, range(1), cache.get, "bench")
        identical, apart = 0, []
        for k, g in enumerate(scales):
            alone = job(registry, model, g, k)
            run_group([alone], range(1), cache.get, "bench")
            a, b = (np.asarray(m.pictures[0]).astype(int) for m in (alone, together[k]))
            levels = np.abs(a - b)
            identical += int(levels.max() == 0)
            apart.append(f"{levels.max()} level(s) in {(levels > 0).mean() * 100:.3f} %")
        print(f"{model} guidance {scales}: {identical} of 4 byte-identical; {', '.join(apart)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
