"""The attention kernel a denoiser really ran, seen on its first call: the fused kernel torch
picked, or the math fallback where it was forced to (as fp32 on some GPUs forces it); logged once
per model, with a warning where a GPU model falls back."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from contract.registry import ModelRegistry
from workers.models.attention import MATH, attention_kernels, log_first_call, watch_first_call
from workers.models.cache import ModelCache


class Attends(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


def test_each_call_is_counted_by_the_kernel_it_ran() -> None:
    x = torch.randn(1, 2, 8, 16)
    with attention_kernels() as fused:
        F.scaled_dot_product_attention(x, x, x)
    assert fused == Counter({"flash (CPU)": 1})  # torch's CPU flash kernel takes fp32
    with sdpa_kernel(SDPBackend.MATH), attention_kernels() as fallback:
        F.scaled_dot_product_attention(x, x, x)
        F.scaled_dot_product_attention(x, x, x)
    assert fallback == Counter({MATH: 2})


def test_only_the_first_call_is_watched_even_when_it_raises() -> None:
    seen: list[Counter[str]] = []
    module = Attends()
    watch_first_call(module, seen.append)
    with pytest.raises(RuntimeError):
        module(torch.randn(2))  # attention needs a batch of sequences
    module(torch.randn(1, 2, 8, 16))
    assert len(seen) == 1
    assert not module._forward_hooks
    assert not module._forward_pre_hooks


def test_a_gpu_model_on_the_math_fallback_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "imagegen.worker"):
        log_first_call("big-flux", "cuda")(Counter({MATH: 57}))
        log_first_call("tiny-sd", "cpu")(Counter({MATH: 2}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("big-flux runs 57 of its attention calls on the math fallback")
    assert "big-flux's first denoiser call ran attention on math ×57" in caplog.text


def test_a_loaded_model_logs_the_kernel_of_its_first_call(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    model = ModelCache(registry).get("demo-flux")
    with caplog.at_level(logging.INFO, "imagegen.worker"):
        for _ in range(2):
            model.text("a harbour", num_inference_steps=1, height=32, width=32)
    lines = [r.getMessage() for r in caplog.records if "first denoiser call" in r.getMessage()]
    # The demo transformer: one double and one single block, one attention call each.
    assert lines == ["demo-flux's first denoiser call ran attention on flash (CPU) ×2"]
