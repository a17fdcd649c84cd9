"""Textual-inversion embeddings: reading a file's vectors, and lending them to a model's text
encoders for one call.

A stage that names embeddings gets, for its call only, a copy of each tokenizer that knows one
new token per vector and an input-embedding lookup that answers those tokens with the vectors
and every other token from the encoder's own table, untouched. Nothing of the model is resized
or rewritten (diffusers' `load_textual_inversion` resizes the shared table, and its unload under
transformers 5 leaves a token behind), so the next job reads its prompt exactly as before, and
an encoder shared by two models is never out of step with either one's tokenizer.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from contract.architectures import ARCHITECTURES
from contract.registry import EmbeddingEntry


@dataclass
class LoadedEmbedding:
    entry: EmbeddingEntry
    # One (vectors, width) tensor per text encoder, in the architecture's encoder order
    # (its row's embedding_keys: CLIP-L, then CLIP-G for SDXL), on the CPU in fp32.
    vectors: list[torch.Tensor]
    last_used: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.vectors)


def read_embedding(entry: EmbeddingEntry) -> LoadedEmbedding:
    """The vectors of `entry`'s file, in any layout its architecture's embeddings ship in:
    A1111's (`emb_params`, or a `.pt` with `string_to_param`), diffusers' (one token's tensor),
    SDXL's `clip_l` + `clip_g`. A pickle is read with torch's weights-only loader: tensors and
    plain values, no code. Raises ValueError for a file that is not such an embedding."""
    keys = ARCHITECTURES[entry.architecture].embedding_keys
    assert keys is not None  # the registry admits embeddings only for architectures that take them
    if entry.file.suffix == ".safetensors":
        raw: dict[str, object] = dict(load_file(str(entry.file)))
    else:
        raw = torch.load(entry.file, map_location="cpu", weights_only=True)
    string_to_param = raw.get("string_to_param")
    if isinstance(string_to_param, dict):  # A1111's .pt: {"*": vectors}, beside its name, step…
        raw = {"emb_params": next(iter(string_to_param.values()))}
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if len(keys.keys) == 1 and len(tensors) == 1:
        found = list(tensors.values())
    elif set(keys.keys) <= set(tensors):
        found = [tensors[k] for k in keys.keys]
    else:
        raise ValueError(
            f"{entry.file.name} holds {sorted(tensors) or 'no tensors'}, not the vectors of a "
            f"{entry.architecture} embedding ({', '.join(keys.keys)})"
        )
    vectors = [t.detach().float().reshape(-1, t.shape[-1]) for t in found]
    if len({v.shape[0] for v in vectors}) != 1:
        raise ValueError(f"{entry.file.name}: its encoders' vectors differ in number")
    return LoadedEmbedding(entry, vectors)


class _LentEmbedding(torch.nn.Module):
    """An encoder's own token table, answering the lent tokens' ids with their vectors."""

    def __init__(self, own: torch.nn.Embedding, ids: list[int], vectors: torch.Tensor) -> None:
        super().__init__()
        self.own = own
        weight = own.weight
        self.ids: torch.Tensor
        self.vectors: torch.Tensor
        self.register_buffer("ids", torch.tensor(ids, device=weight.device), persistent=False)
        self.register_buffer("vectors", vectors.to(weight.device, weight.dtype), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # what transformers reads of an input embedding
        return self.own.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        lent = torch.isin(input_ids, self.ids)
        out: torch.Tensor = self.own(torch.where(lent, 0, input_ids))
        if lent.any():
            rows = torch.eq(input_ids[lent].unsqueeze(-1), self.ids).int().argmax(-1)
            out = out.clone()
            out[lent] = self.vectors[rows]
        return out


def _encoders(pipe: DiffusionPipeline, count: int) -> list[tuple[str, str]]:
    """The (tokenizer, text encoder) component names of the first `count` encoders."""
    names = [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
    return names[:count]


@contextlib.contextmanager
def lent(
    pipes: list[DiffusionPipeline], embeddings: list[LoadedEmbedding]
) -> Iterator[dict[str, str]]:
    """`embeddings` lent to the pipelines' text encoders (pipelines of one model, sharing them)
    for the time of the block. Yields each embedding's name -> the tokens to write in its place.
    Raises ValueError where an embedding's width is not its encoder's."""
    first = pipes[0]
    spelled = {
        e.entry.name: " ".join(f"<emb{j}.{r}>" for r in range(e.vectors[0].shape[0]))
        for j, e in enumerate(embeddings)
    }
    restore: list[tuple[DiffusionPipeline, str, object]] = []
    encoders_restore: list[tuple[Any, torch.nn.Module]] = []
    try:
        for k, (tokenizer_name, encoder_name) in enumerate(
            _encoders(first, len(embeddings[0].vectors))
        ):
            encoder = getattr(first, encoder_name)
            own = encoder.get_input_embeddings()
            tokenizer = copy.deepcopy(getattr(first, tokenizer_name))
            ids: list[int] = []
            rows: list[torch.Tensor] = []
            for e in embeddings:
                vectors = e.vectors[k]
                if vectors.shape[-1] != own.embedding_dim:
                    raise ValueError(
                        f"embedding {e.entry.name!r} holds {vectors.shape[-1]}-wide vectors for "
                        f"{encoder_name}, which reads {own.embedding_dim}-wide ones"
                    )
                tokens = spelled[e.entry.name].split()
                tokenizer.add_tokens(tokens)
                ids += [tokenizer.convert_tokens_to_ids(t) for t in tokens]
                rows.append(vectors)
            encoder.set_input_embeddings(_LentEmbedding(own, ids, torch.cat(rows)))
            encoders_restore.append((encoder, own))
            for pipe in pipes:
                restore.append((pipe, tokenizer_name, getattr(pipe, tokenizer_name)))
                setattr(pipe, tokenizer_name, tokenizer)
        yield spelled
    finally:
        for pipe, name, tokenizer in reversed(restore):
            setattr(pipe, name, tokenizer)
        for encoder, own in encoders_restore:
            encoder.set_input_embeddings(own)
