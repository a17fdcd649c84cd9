"""What a worker's memory budget counts against what the process really holds (CPU, one run).

    python -m bench.residents

Loads a demo model, a LoRA adapter into it and an upscaler model of a published size (ESRGAN 4x
with 64 filters and 23 RRDB blocks: the size of 4x-UltraSharp and RealESRGAN_x4plus, 67 MB with
random weights), and prints, for each, the bytes the cache counts and the growth of the process's
resident set (RSS, from /proc). RSS moves in pages and with the allocator, so compare each
ratio, not the bytes.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import psutil
import torch
from safetensors.torch import save_file

from contract.registry import ModelRegistry
from demo.loras import build_sd15_lora
from demo.models import ensure_built
from jobs.settings import REPO_ROOT
from workers.models.cache import ModelCache
from workers.models.upscalers import _spandrel


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def full_size_esrgan(out: Path) -> Path:
    _spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    model = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    return out


def main() -> int:
    models = REPO_ROOT / ".models"
    ensure_built(models, ("demo-sd15",))
    scratch = Path(tempfile.mkdtemp())
    lora = build_sd15_lora(models, scratch / "lora.safetensors")
    esrgan = full_size_esrgan(scratch / "esrgan-4x-64f-23b.safetensors")
    registry = ModelRegistry.model_validate(
        {
            "models": {
                "m": {"architecture": "sd15", "source": {"folder": str(models / "demo-sd15")}}
            },
            "upscalers": {"esrgan": {"file": str(esrgan), "device": "cpu"}},
        }
    )
    cache = ModelCache(registry)
    torch.zeros(1)  # torch's own start-up allocations happen before the first reading
    rows = []
    before, counted = rss(), cache.resident_bytes()
    model = cache.get("m")
    rows.append(("demo-sd15 model", cache.resident_bytes() - counted, rss() - before))
    before, counted = rss(), cache.resident_bytes()
    model.use_adapter("l", lora, keep={"l"})
    rows.append(("its LoRA adapter", cache.resident_bytes() - counted, rss() - before))
    before, counted = rss(), cache.resident_bytes()
    cache.upscaler("esrgan")
    rows.append(("ESRGAN 4x (published size)", cache.resident_bytes() - counted, rss() - before))
    print(f"{'what':28} {'counted MiB':>12} {'RSS growth MiB':>15} {'RSS / counted':>14}")
    for what, count, grew in rows:
        ratio = grew / count if count else float("nan")
        print(f"{what:28} {count / 2**20:12.2f} {grew / 2**20:15.2f} {ratio:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
