"""Reading a safetensors file's header: every tensor's name, dtype and shape, no weights.

A safetensors file starts with an 8-byte little-endian length and a JSON header naming every
tensor, its dtype, shape and byte range: reading it costs well under a millisecond on a 2 GB file,
whatever the file's extension (BFL ships Flux as `.sft`). No torch is needed, so the gateway can
read LoRA headers too.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
_HEADER_LIMIT = 100 * 2**20  # the safetensors format's own bound on the header


def read_header(path: Path) -> dict[str, Any] | None:
    """The safetensors header (tensor name -> dtype, shape, data_offsets), or None if the file
    is not a safetensors file."""
    found = header_with_length(path)
    return found[1] if found else None


def declared_header_length(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            length: int = struct.unpack("<Q", handle.read(8))[0]
    except (OSError, struct.error):
        return None
    return length if 2 <= length <= _HEADER_LIMIT else None


def header_with_length(path: Path) -> tuple[int, dict[str, Any]] | None:
    """The header's length in bytes and the header."""
    try:
        with path.open("rb") as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            if not 2 <= length <= _HEADER_LIMIT:
                return None
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError):
        return None
    return (length, header) if isinstance(header, dict) else None


# ComfyUI's scaled fp8 (`workers.models.scaled_fp8`): a marker, beside each scaled weight its
# scale, and for fp8 matmuls an input scale that a reader computing in the model's dtype skips.
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIX = ".scale_weight"
_INPUT_SCALE_SUFFIX = ".scale_input"


def is_scale_key(key: str) -> bool:
    """A scaled-fp8 file's marker or scale: no weight of any model."""
    return key == SCALED_FP8_MARKER or key.endswith((SCALE_SUFFIX, _INPUT_SCALE_SUFFIX))
