"""Which architecture a ControlNet file was made for, told from its header or its config;
ControlNet folders.

A ControlNet is a copy of its model's encoder half, so it carries the model's widths: for the
UNet families, the width its cross-attention keys project from (`attn2.to_k`: 768 SD1.5, 2048
SDXL), under LDM's names (A1111's `control_model.…`, with its `input_hint_block`) or diffusers'
(`controlnet_cond_embedding`); for the transformers, their own input embedders (Flux's
`controlnet_x_embedder`, XLabs' `pos_embed_input`, SD3's patched `pos_embed_input.proj`). A
diffusers folder's `config.json` names its class and cross-attention width. The marks are each
row's `controlnet_keys` (`contract.architectures`): never the file's name, which is what
sd-webui-controlnet guesses from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from contract.architectures import ARCHITECTURES, controlnets_of, shown_by_keys
from contract.names import MODEL_NAME
from contract.safetensors_header import read_header

log = logging.getLogger("imagegen.registry")

_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k\.weight$")
# What only a ControlNet holds: its conditioning embedder (each layout's name for it).
_CONTROLNET_MARKS = ("controlnet", "input_hint_block", "pos_embed_input")
_CONFIG = "config.json"


def is_controlnet(header: dict[str, Any]) -> bool:
    return any(mark in key for key in header for mark in _CONTROLNET_MARKS)


def controlnet_architecture(header: dict[str, Any]) -> str | None:
    """The architecture a ControlNet's header shows, or None where it does not tell."""
    return shown_by_keys(header, controlnets_of, _CROSS_ATTENTION_KEY)


def architecture_of_config(config: dict[str, Any]) -> str | None:
    """The architecture a diffusers ControlNet config names: its class, and for the UNet
    families its cross-attention width."""
    for arch in ARCHITECTURES.values():
        keys = arch.controlnet_keys
        if keys is None or config.get("_class_name") != keys.config_class:
            continue
        if keys.cross_attention_width in (None, config.get("cross_attention_dim")):
            return arch.name
    return None


def probe_controlnet(path: Path) -> tuple[bool, str | None]:
    """Whether `path` (a safetensors file or a diffusers folder) holds a ControlNet, and the
    architecture it shows (None where it does not tell, or it is not readable here)."""
    if path.is_dir():
        try:
            config = json.loads((path / _CONFIG).read_text())
        except (OSError, ValueError):
            return False, None
        if not isinstance(config, dict) or "ControlNet" not in str(config.get("_class_name")):
            return False, None
        return True, architecture_of_config(config)
    header = read_header(path) if path.is_file() else None
    if header is None or not is_controlnet(header):
        return False, None
    return True, controlnet_architecture(header)


def discover_controlnets(folder: Path) -> dict[str, dict[str, Any]]:
    """Registry entries for the ControlNets in `folder` (safetensors files and diffusers
    folders, named by their names), each with the architecture it shows. Those that show none,
    or whose name does not fit, are left out, with a warning naming why."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        if not (path.suffix == ".safetensors" or (path / _CONFIG).is_file()):
            continue
        name = path.stem if path.is_file() else path.name
        if not MODEL_NAME.match(name):
            log.warning("ControlNet %s left out: its name must match %s", path, MODEL_NAME.pattern)
            continue
        holds, architecture = probe_controlnet(path)
        if not holds or architecture is None:
            log.warning(
                "ControlNet %s left out: %s; list it in the registry's controlnets section with "
                "architecture: …",
                path,
                "it holds no ControlNet" if not holds else "it does not show its architecture",
            )
            continue
        found[name] = {"name": name, "file": path, "architecture": architecture}
    return found


def controlnet_hash(path: Path) -> str | None:
    """sd-webui-controlnet's short hash of a ControlNet, as its model list writes it
    (`name [hash]`): A1111's old model hash, the first 8 hex digits of the SHA-256 of 64 KiB
    at 1 MiB into the weights file. None where the file is not readable here. Read once per
    version of the file (the model list and every PNG ask again)."""
    weights = path / "diffusion_pytorch_model.safetensors" if path.is_dir() else path
    try:
        stat = weights.stat()
    except OSError:
        return None
    return _short_hash(str(weights), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _short_hash(path: str, _size: int, _mtime: int) -> str | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(0x100000)
            return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
    except OSError:
        return None
