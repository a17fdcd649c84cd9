"""Which architecture an IP-Adapter file was made for, told from its header; the image encoder
it reads pictures with; IP-Adapter folders.

An IP-Adapter adds, to each cross-attention of its model, keys and values for a picture
(`ip_adapter.N.to_k_ip`): they project from the width that cross-attention reads (768 SD1.5,
2048 SDXL, 4096 Flux), so the header tells the architecture, as it does for ControlNets. XLabs'
Flux layout and InstantX's SD3.5 layout have marks of their own. Its image projection
(`image_proj.…`) takes the image encoder's embedding (IP-Adapter: the projected one,
`proj.weight`; Plus: the hidden states, `proj_in.weight`), so an adapter paired with the wrong
encoder is told apart before anything loads. The marks are each row's `ip_adapter_keys`
(`contract.architectures`), never the file's name.

h94's layout keeps the encoder beside the adapters (`models/image_encoder/` next to
`models/ip-adapter_sd15.safetensors`): an adapter whose entry names no encoder takes that one.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.architectures import ip_adapters_of, shown_by_keys
from contract.names import MODEL_NAME
from contract.safetensors_header import read_header

log = logging.getLogger("imagegen.registry")

_IMAGE_KEY = re.compile(r"(?:^|\.)to_k_ip(?:\.0)?\.weight$")
_MARKS = ("to_k_ip", "ip_adapter_double_stream_k_proj", "norm_ip.")
# The folder beside the adapters that h94's layout keeps the image encoder in.
IMAGE_ENCODER_FOLDER = "image_encoder"


@dataclass(frozen=True)
class IpAdapterHeader:
    architecture: str | None  # None where the keys do not tell
    # The image encoder width its projection takes, and which of the encoder's outputs:
    # "projected" (its image_embeds) or "hidden" (its hidden states, the Plus adapters).
    image_width: int | None
    image_output: str | None


def is_ip_adapter(header: dict[str, Any]) -> bool:
    return any(mark in key for key in header for mark in _MARKS)


def read_ip_adapter(header: dict[str, Any]) -> IpAdapterHeader:
    """What an IP-Adapter's header shows: its architecture and the encoder width it takes."""
    architecture = shown_by_keys(header, ip_adapters_of, _IMAGE_KEY)
    return IpAdapterHeader(architecture, *_image_input(header))


def _image_input(header: dict[str, Any]) -> tuple[int | None, str | None]:
    for key, output in (
        ("image_proj.proj.weight", "projected"),
        ("image_proj.proj_in.weight", "hidden"),
    ):
        shape = (header.get(key) or {}).get("shape") or []
        if len(shape) == 2:
            return shape[1], output
    return None, None


def probe_ip_adapter(path: Path) -> IpAdapterHeader | None:
    """What `path` shows as an IP-Adapter (a safetensors file), or None where it holds none
    (or is not readable here)."""
    header = read_header(path) if path.is_file() else None
    if header is None or not is_ip_adapter(header):
        return None
    return read_ip_adapter(header)


def encoder_width(folder: Path, output: str) -> int | None:
    """The width of an image encoder folder's `output` ("projected": its projection_dim;
    "hidden": its hidden_size), from its config.json (a CLIPVisionModelWithProjection's); None
    where it does not say."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    value = config.get("projection_dim" if output == "projected" else "hidden_size")
    return value if isinstance(value, int) else None


def discover_ip_adapters(folder: Path) -> dict[str, dict[str, Any]]:
    """Registry entries for the IP-Adapters in `folder` (safetensors files, named by their
    names), each with the architecture it shows and the folder's `image_encoder/`. Those that
    show none, or whose name does not fit, are left out, with a warning naming why."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        name = path.stem
        if not MODEL_NAME.match(name):
            log.warning("IP-Adapter %s left out: its name must match %s", path, MODEL_NAME.pattern)
            continue
        probed = probe_ip_adapter(path)
        if probed is None or probed.architecture is None:
            log.warning(
                "IP-Adapter %s left out: %s; list it in the registry's ip_adapters section with "
                "architecture: …",
                path,
                "it holds no IP-Adapter" if probed is None else "it does not show its architecture",
            )
            continue
        found[name] = {"name": name, "file": path, "architecture": probed.architecture}
    return found
