"""Which architecture a textual-inversion embedding was trained for, told from its header;
embedding folders; where a prompt names one.

An embedding is a few learned token vectors per text encoder. Its header shows the layout
(`contract.architectures` rows' `embedding_keys`): SDXL's hold `clip_l` (768 wide) and `clip_g`
(1280) side by side, which no other architecture's do; SD1.5's hold one tensor of CLIP-L's 768 —
`emb_params` (A1111's safetensors), `string_to_param.*`, or a single token's name (diffusers') —
told from SD2's 1024 by its width. `.pt`/`.bin` files are pickles, which the gateway does not
open: their entry writes the architecture, and the worker checks the widths when it loads them.

Prompts name embeddings as A1111's do: by name, as a word of its own, in any case.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.architectures import ARCHITECTURES
from contract.names import MODEL_NAME
from contract.safetensors_header import read_header

log = logging.getLogger("imagegen.registry")

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


@dataclass(frozen=True)
class EmbeddingProbe:
    architecture: str | None  # None: the layout does not tell
    vectors: int  # token positions it takes in a prompt
    width: int  # of its first text encoder's vectors


def embedding_architecture(header: dict[str, Any]) -> EmbeddingProbe | None:
    """What an embedding's header shows, or None where it holds no embedding."""
    shapes = {k: v.get("shape") or [] for k, v in header.items() if k != "__metadata__"}
    if not shapes or any(len(shape) != 2 for shape in shapes.values()):
        return None
    rows = [a for a in ARCHITECTURES.values() if a.embedding_keys is not None]
    for arch in rows:  # the layouts of several encoders: their names tell
        assert arch.embedding_keys is not None
        keys = arch.embedding_keys.keys
        if len(keys) > 1 and set(keys) <= set(shapes):
            vectors, width = shapes[keys[0]]
            return EmbeddingProbe(arch.name, int(vectors), int(width))
    if len(shapes) != 1:
        return None
    ((_, (vectors, width)),) = shapes.items()  # one encoder's: its width tells
    found = next(
        (a.name for a in rows if a.embedding_keys and a.embedding_keys.widths == (width,)), None
    )
    return EmbeddingProbe(found, int(vectors), int(width))


def probe_embedding(path: Path) -> EmbeddingProbe | None:
    header = read_header(path) if path.is_file() else None
    return None if header is None else embedding_architecture(header)


def discover_embeddings(folder: Path) -> dict[str, dict[str, Any]]:
    """Registry entries for the safetensors embeddings in `folder`, named by their file names
    (as A1111 names them in prompts), each with the architecture its header shows. Files that do
    not show one, or whose name does not fit, are left out, with a warning naming why."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        if not MODEL_NAME.match(path.stem):
            log.warning("embedding %s left out: its name must match %s", path, MODEL_NAME.pattern)
            continue
        probe = probe_embedding(path)
        if probe is None or probe.architecture is None:
            log.warning(
                "embedding %s left out: its header does not show its architecture; list it in "
                "the registry's embeddings section with architecture: …",
                path,
            )
            continue
        found[path.stem] = {"name": path.stem, "file": path, "architecture": probe.architecture}
    return found


def named_in(text: str | None, names: list[str]) -> list[str]:
    """The registered embeddings `text` names, in the order of `names`: each as a word of its
    own (not inside a longer word or name), in any case, as A1111's prompts name them."""
    if not text:
        return []
    return [name for name in names if _word(name).search(text)]


def spelled(text: str, tokens: dict[str, str]) -> str:
    """`text` with each embedding's name (any case) replaced by its tokens."""
    for name, replacement in tokens.items():
        text = _word(name).sub(replacement, text)
    return text


def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.IGNORECASE)
