"""One picture from a loaded demo model (64², two steps, a fixed seed), for the tests that compare
ways of holding the same weights (fp8, scaled fp8, GGUF) by what they draw. Apart from
tests/helpers.py, which the test processes import without torch."""

from __future__ import annotations

import numpy as np
import torch

from workers.models.cache import LoadedModel


def picture(model: LoadedModel) -> np.ndarray:
    out = model.text(
        "a harbour", num_inference_steps=2, height=64, width=64,
        generator=torch.Generator().manual_seed(3), output_type="np",
    )  # fmt: skip
    return np.asarray(out.images[0])
