"""Reading an embedding's vectors in each layout its files ship in, and lending them to a
model's text encoders for one call: the model's own tokenizers and token tables are back,
untouched, afterwards; a width its encoder does not read is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contract.registry import EmbeddingEntry, ModelRegistry
from workers.models.cache import ModelCache
from workers.models.embeddings import LoadedEmbedding, lent, read_embedding


def entry(file: Path, architecture: str = "sd15") -> EmbeddingEntry:
    return EmbeddingEntry(name=file.stem, architecture=architecture, file=file)


def test_each_layout_reads_as_its_vectors_per_encoder(tmp_path: Path) -> None:
    vectors = torch.randn(3, 768)
    a1111_pt = tmp_path / "a1111.pt"
    torch.save({"string_to_param": {"*": vectors}, "name": "x", "step": 500}, a1111_pt)
    save_file({"emb_params": vectors}, tmp_path / "a1111.safetensors")
    torch.save({"<x>": vectors}, tmp_path / "diffusers.bin")
    for file in ("a1111.pt", "a1111.safetensors", "diffusers.bin"):
        [read] = read_embedding(entry(tmp_path / file)).vectors
        assert torch.equal(read, vectors)
    xl = {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}
    save_file(xl, tmp_path / "xl.safetensors")
    clip_l, clip_g = read_embedding(entry(tmp_path / "xl.safetensors", "sdxl")).vectors
    assert torch.equal(clip_l, xl["clip_l"])
    assert torch.equal(clip_g, xl["clip_g"])


def test_a_file_of_another_layout_is_refused_naming_what_it_holds(tmp_path: Path) -> None:
    save_file(
        {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, tmp_path / "x.safetensors"
    )
    with pytest.raises(
        ValueError, match=r"holds \['clip_g', 'clip_l'\], not the vectors of a sd15"
    ):
        read_embedding(entry(tmp_path / "x.safetensors"))


def test_lending_leaves_the_models_tokenizer_and_token_table_as_they_were(
    registry: ModelRegistry,
) -> None:
    model = ModelCache(registry).get("demo-sd15")
    pipe = model.text
    tokenizer, table = pipe.tokenizer, pipe.text_encoder.get_input_embeddings()
    weights = table.weight.detach().clone()
    lent_one = LoadedEmbedding(entry(Path("style.safetensors")), [torch.randn(2, 32)])
    with lent([pipe], [lent_one]) as tokens:
        assert tokens == {"style": "<emb0.0> <emb0.1>"}
        assert len(pipe.tokenizer.tokenize("a <emb0.0> <emb0.1>")) == 3
        assert pipe.tokenizer is not tokenizer
    assert pipe.tokenizer is tokenizer
    assert pipe.text_encoder.get_input_embeddings() is table
    assert torch.equal(table.weight, weights)
    assert tokenizer.tokenize("<emb0.0>") != ["<emb0.0>"]  # never known to the model's own
    too_wide = LoadedEmbedding(entry(Path("wide.safetensors")), [torch.randn(2, 768)])
    refused = pytest.raises(
        ValueError, match="holds 768-wide vectors for text_encoder, which reads 32"
    )
    with refused, lent([pipe], [too_wide]):
        pass
    assert pipe.text_encoder.get_input_embeddings() is table
