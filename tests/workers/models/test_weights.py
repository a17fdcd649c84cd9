"""Weight files read without loading them: sizes at the held dtype, and fingerprints."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from workers.models.weights import estimated_bytes, fingerprint


def test_float_tensors_count_at_the_held_dtype(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(
        {"f": torch.zeros(10, 10, dtype=torch.float32), "i": torch.zeros(5, dtype=torch.int64)},
        path,
    )
    assert estimated_bytes([path], torch.float16) == 100 * 2 + 5 * 8  # int64 at its own 8
    assert estimated_bytes([path], torch.float32) == 100 * 4 + 5 * 8


def test_fp8_tensors_count_at_the_dtype_they_are_loaded_as(tmp_path: Path) -> None:
    # They were counted at 4 bytes; loading casts them to the model's dtype.
    path = tmp_path / "fp8.safetensors"
    save_file({"w": torch.zeros(100, dtype=torch.float8_e4m3fn)}, path)
    assert estimated_bytes([path], torch.bfloat16) == 100 * 2


def test_identical_weights_share_a_fingerprint(tmp_path: Path) -> None:
    for folder, value in (("a", 1.0), ("b", 1.0), ("c", 2.0)):
        (tmp_path / folder).mkdir()
        save_file({"w": torch.full((4,), value)}, tmp_path / folder / "m.safetensors")
    assert fingerprint(tmp_path / "a") == fingerprint(tmp_path / "b")
    assert fingerprint(tmp_path / "a") != fingerprint(tmp_path / "c")
    (tmp_path / "empty").mkdir()
    assert fingerprint(tmp_path / "empty") is None
