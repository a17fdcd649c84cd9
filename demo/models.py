"""Tiny random-weight models that keep each architecture's real structure.

No machine this project runs on can reach a model hub, so tests, benchmarks and `make run` use
these: real diffusers folders (loadable with `DiffusionPipeline.from_pretrained`) whose latent
channels, VAE downscale and scaling/shift factors, text encoders and schedulers are those of each
architecture of `contract.architectures`, with layers shrunk until a 64-256 px image takes well
under a second on a CPU. Their pictures are noise; their tensor plumbing is real.

    python -m demo.models build <dir>

Each architecture's demo model is `demo-<architecture>`, built by its family's module here
(`demo/<family>.py`, named by the architecture's row, as the worker's `workers/families/` are).
The build is deterministic: fixed seeds, and tokenizers made from vocabularies shipped in
`demo/assets/`.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from contract.architectures import ARCHITECTURES

DEMO_MODELS = tuple(f"demo-{name}" for name in ARCHITECTURES)
# Not models: files other registry sections point at (demo/upscalers.py, demo/loras.py,
# demo/vaes.py, demo/embeddings.py, demo/controlnets.py, demo/ip_adapters.py, demo/quantized.py,
# demo/inpainting.py).
DEMO_EXTRAS = (
    "demo-upscalers", "demo-loras", "demo-vaes", "demo-embeddings", "demo-controlnets",
    "demo-ip-adapters", "demo-quantized", "demo-inpainting",
)  # fmt: skip
# Extras made from demo models under the same root (built first): name -> (builder as
# "module:function", models).
FROM_MODELS = {
    "demo-loras": ("demo.loras:build_demo_loras", ("demo-sd15", "demo-flux")),
    "demo-vaes": ("demo.vaes:build_demo_vaes", ("demo-sd15", "demo-sdxl")),
    "demo-embeddings": ("demo.embeddings:build_demo_embeddings", ("demo-sd15", "demo-sdxl")),
    "demo-controlnets": (
        "demo.controlnets:build_demo_controlnets",
        ("demo-sd15", "demo-sdxl", "demo-flux"),
    ),
    "demo-ip-adapters": ("demo.ip_adapters:build_demo_ip_adapters", ("demo-sd15", "demo-sdxl")),
    "demo-quantized": ("demo.quantized:build_demo_quantized", ("demo-flux", "demo-sd35")),
    "demo-inpainting": (
        "demo.inpainting:build_demo_inpainting",
        ("demo-sd15", "demo-sdxl", "demo-flux"),
    ),
}

# Written into every folder; a folder whose marker differs is rebuilt by `ensure_built`.
# 2: demo-flux's VAE made apart, for demo-chroma to share; 3: demo-sd35's quantized files and
# demo-flux's NF4 one
BUILD_VERSION = "3"
MARKER = "demo_build.json"


def builders() -> dict[str, Callable[[Path], None]]:
    """Every demo folder's builder: each architecture's from its family's module. Imported only
    when something is built: the builders import torch, which a process that finds every folder
    current (a test run's controller, `make run`'s gateway) need not pay for."""
    from demo.upscalers import build_upscalers

    found: dict[str, Callable[[Path], None]] = {"demo-upscalers": build_upscalers}
    for family in dict.fromkeys(arch.family for arch in ARCHITECTURES.values()):
        found.update(importlib.import_module(f"demo.{family}").BUILDERS)
    missing = set(DEMO_MODELS) - set(found)
    assert not missing, f"no demo builder for {sorted(missing)}"
    return found


def _is_current(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION


def ensure_built(root: Path, names: tuple[str, ...] = DEMO_MODELS + DEMO_EXTRAS) -> list[Path]:
    """Build each demo model under `root` unless an up-to-date copy is already there.

    Builders take turns (a lock file in `root`): test processes started together, or `make run`
    beside a test run, would otherwise build into the same temporary folder at once.
    """
    needed = [model for name in names if name in FROM_MODELS for model in FROM_MODELS[name][1]]
    names = tuple(dict.fromkeys([*needed, *names]))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = _build_missing(root, names)
        for name in names:  # copies built before this rule was kept, too
            readable_by_all(root / name)
        return built


def _build_missing(root: Path, names: tuple[str, ...]) -> list[Path]:
    missing = [name for name in names if not _is_current(root / name)]
    build = builders() if missing else {}
    built = []
    for name in missing:
        folder = root / name
        # Build beside the target and rename, so a killed build never leaves a half folder.
        tmp = root / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        if name in FROM_MODELS:
            module, function = FROM_MODELS[name][0].split(":")
            getattr(importlib.import_module(module), function)(root, tmp)
        else:
            build[name](tmp)
        (tmp / MARKER).write_text(json.dumps({"version": BUILD_VERSION, "model": name}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        built.append(folder)
    return built


def readable_by_all(folder: Path) -> None:
    """`chmod -R a+rX`: safetensors writes weights 0600 whatever the umask, and a container's
    user (uid 10001 in the worker image) reads these through a read-only mount."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | (0o555 if path.is_dir() else 0o444))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.models")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the tiny demo models into a folder")
    build.add_argument("dir", type=Path)
    every = DEMO_MODELS + DEMO_EXTRAS
    build.add_argument("--only", nargs="*", choices=every, default=list(every))
    args = parser.parse_args(argv)
    for folder in ensure_built(args.dir, tuple(args.only)):
        print(f"built {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
