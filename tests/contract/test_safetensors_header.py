"""A safetensors header read without torch or the weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from contract.safetensors_header import declared_header_length, header_with_length, read_header


def test_the_header_names_every_tensor_with_dtype_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "flux1-dev.sft"  # whatever the extension
    save_file({"img_in.weight": torch.zeros(8, 4, dtype=torch.bfloat16)}, path)
    header = read_header(path)
    assert header is not None
    assert header["img_in.weight"]["dtype"] == "BF16"
    assert header["img_in.weight"]["shape"] == [8, 4]
    found = header_with_length(path)
    assert found is not None
    assert found[0] == declared_header_length(path)


def test_other_files_have_none(tmp_path: Path) -> None:
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"PK\x03\x04 a zip, as torch.save writes")
    assert read_header(pickle) is None
    assert read_header(tmp_path / "missing.safetensors") is None
