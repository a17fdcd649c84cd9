"""An embedding's architecture from its header, in the layouts A1111, diffusers and SDXL
trainers write; embedding folders; the words of a prompt that name one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from contract.embedding_files import (
    EmbeddingProbe,
    discover_embeddings,
    named_in,
    probe_embedding,
    spelled,
)
from contract.registry import ModelRegistry

MODEL = {"m": {"architecture": "sd15", "source": {"folder": "m"}}}


def embedding_file(path: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, path)
    return path


@pytest.mark.parametrize(
    ("shapes", "probe"),
    [
        ({"emb_params": (3, 768)}, EmbeddingProbe("sd15", 3, 768)),  # A1111's safetensors
        ({"<cat-toy>": (1, 768)}, EmbeddingProbe("sd15", 1, 768)),  # diffusers': one token's
        ({"string_to_param.*": (8, 768)}, EmbeddingProbe("sd15", 8, 768)),  # A1111's .pt, kept
        ({"clip_l": (2, 768), "clip_g": (2, 1280)}, EmbeddingProbe("sdxl", 2, 768)),  # SDXL's
        ({"clip_l": (2, 32), "clip_g": (2, 32)}, EmbeddingProbe("sdxl", 2, 32)),  # the names tell
        ({"emb_params": (4, 1024)}, EmbeddingProbe(None, 4, 1024)),  # SD2's width: no row here
        ({"emb_params": (2, 32)}, EmbeddingProbe(None, 2, 32)),  # the demo's tiny width
    ],
)
def test_an_embeddings_architecture_is_read_from_its_layout_and_widths(
    tmp_path: Path, shapes: dict[str, tuple[int, int]], probe: EmbeddingProbe
) -> None:
    assert probe_embedding(embedding_file(tmp_path / "e.safetensors", shapes)) == probe


def test_a_lora_is_no_embedding(tmp_path: Path) -> None:
    lora = tmp_path / "l.safetensors"
    save_file({"a.lora_down.weight": torch.zeros(4, 768), "b.alpha": torch.zeros(())}, lora)
    assert probe_embedding(lora) is None


def load(tmp_path: Path, **sections: object) -> ModelRegistry:
    file = tmp_path / "registry.yaml"
    file.write_text(yaml.safe_dump({"models": MODEL, **sections}))
    return ModelRegistry.load(file)


def test_the_registry_reads_each_embeddings_architecture_and_refuses_a_contradiction(
    tmp_path: Path,
) -> None:
    xl = embedding_file(tmp_path / "xl.safetensors", {"clip_l": (2, 768), "clip_g": (2, 1280)})
    found = load(tmp_path, embeddings={"xl": {"file": str(xl)}}).embeddings["xl"]
    assert (found.architecture, found.architecture_from, found.vectors) == ("sdxl", "header", 2)
    said = r"the registry says sd15, but xl\.safetensors holds the vectors of a sdxl embedding"
    with pytest.raises(ValueError, match=said):
        load(tmp_path, embeddings={"xl": {"architecture": "sd15", "file": str(xl)}})


def test_a_pickle_or_an_unreadable_file_keeps_the_registrys_word(tmp_path: Path) -> None:
    pickle = tmp_path / "old.pt"
    torch.save({"string_to_param": {"*": torch.zeros(2, 768)}, "name": "old"}, pickle)
    with pytest.raises(ValueError, match="is a pickle, which is not opened here; write its"):
        load(tmp_path, embeddings={"old": {"file": str(pickle)}})
    old = load(tmp_path, embeddings={"old": {"architecture": "sd15", "file": str(pickle)}})
    assert old.embeddings["old"].architecture_from == "registry"
    with pytest.raises(ValueError, match="flux prompts take no embeddings; those of sd15, sdxl"):
        load(tmp_path, embeddings={"old": {"architecture": "flux", "file": str(pickle)}})


def test_embedding_folders_add_the_files_that_show_their_architecture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    embedding_file(folder / "easynegative.safetensors", {"emb_params": (8, 768)})
    embedding_file(folder / "tiny.safetensors", {"emb_params": (2, 32)})
    with caplog.at_level(logging.WARNING, "imagegen.registry"):
        found = discover_embeddings(folder)
    assert {n: e["architecture"] for n, e in found.items()} == {"easynegative": "sd15"}
    assert "tiny.safetensors left out: its header does not show its architecture" in caplog.text


def test_a_prompt_names_an_embedding_as_a_word_of_its_own_in_any_case() -> None:
    names = ["bad-hands-5", "easynegative"]
    assert named_in("EasyNegative, (bad-hands-5:1.2), blurry.", names) == names
    assert named_in("easynegatives, bad-hands-50, not-easynegative", names) == []
    assert named_in(None, names) == []
    tokens = {"easynegative": "<emb0.0> <emb0.1>"}
    assert (
        spelled("a, EASYNEGATIVE. easynegatives", tokens) == "a, <emb0.0> <emb0.1>. easynegatives"
    )
