"""Tiny textual-inversion embeddings for the demo models, in the layouts A1111 writes them: two
random vectors for demo-sd15's text encoder (`emb_params`), and two for each of demo-sdxl's
(`clip_l`, `clip_g`), as wide as the demo encoders (so they change the picture).

Named in a prompt ("a castle, demo-sd15-emb"), they stand for their vectors. The SDXL one's
layout shows its architecture; the SD1.5 one's 32-wide vectors do not (a real one's are CLIP-L's
768), so the demo registry writes it.

`python -m demo.models build` makes them into its `demo-embeddings` folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

VECTORS = 2


def build_demo_embeddings(demo_models: Path, out: Path) -> None:
    """The demo registry's embeddings, into `out`, as wide as the demo models' text encoders."""
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(21)

    def vectors(model: str, encoder: str) -> torch.Tensor:
        config = json.loads((demo_models / model / encoder / "config.json").read_text())
        return torch.randn(VECTORS, config["hidden_size"], generator=generator)

    save_file(
        {"emb_params": vectors("demo-sd15", "text_encoder")}, out / "demo-sd15-emb.safetensors"
    )
    sdxl = {
        "clip_l": vectors("demo-sdxl", "text_encoder"),
        "clip_g": vectors("demo-sdxl", "text_encoder_2"),
    }
    save_file(sdxl, out / "demo-sdxl-emb.safetensors")
