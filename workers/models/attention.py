"""Which attention kernel a model's denoiser really runs, seen on its first call.

`F.scaled_dot_product_attention` picks a kernel per call (flash, memory-efficient, cuDNN, or the
math fallback, which builds the whole attention matrix: several times slower and far larger at
1024²) from the inputs' dtype, shapes, device and the build, and says nothing. A model in fp32 on
a GPU, or an old build, silently falls back to math. So the first forward of each denoiser runs
under two observers: one counts the calls to `scaled_dot_product_attention`, one sees which
fused kernel each dispatched to; a call that reached none ran the math fallback (it decomposes
into matmuls and a softmax). That forward is a little slower (every op passes through Python
once); the later ones are untouched.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

log = logging.getLogger("imagegen.worker")

# aten's fused attention kernels (their op names, without the overload), in words.
KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_fused_attention_overrideable": "fused (device's own)",
}
MATH = "math"


class _Calls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is F.scaled_dot_product_attention:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _Kernels(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.__name__.split(".")[0]
        if name in KERNELS:
            self.seen[KERNELS[name]] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def attention_kernels() -> Any:
    """Counts, while open, each attention call by the kernel it ran (`MATH` for the fallback)."""
    calls, kernels = _Calls(), _Kernels()
    found: Counter[str] = Counter()
    with calls, kernels:
        yield found
    found.update(kernels.seen)
    fallback = calls.count - sum(kernels.seen.values())
    if fallback > 0:
        found[MATH] += fallback


def watch_first_call(module: torch.nn.Module, report: Callable[[Counter[str]], None]) -> None:
    """Observe `module`'s next forward (`attention_kernels`) and pass what it ran to `report`;
    the hooks remove themselves after it, whether it returns or raises."""
    stack = contextlib.ExitStack()
    found: list[Counter[str]] = []

    def before(*_: object) -> None:
        found.append(stack.enter_context(attention_kernels()))

    def after(*_: object) -> None:
        pre.remove()
        post.remove()
        stack.close()
        if found:
            report(found[0])

    pre = module.register_forward_pre_hook(before)
    post = module.register_forward_hook(after, always_call=True)


def describe(kernels: Counter[str]) -> str:
    if not kernels:
        return "no scaled_dot_product_attention call (another attention implementation)"
    return ", ".join(f"{name} ×{count}" for name, count in kernels.most_common())


def log_first_call(name: str, device: str) -> Callable[[Counter[str]], None]:
    """A `report` that logs the kernels of `name`'s first call, and warns where a GPU model fell
    back to math."""

    def report(kernels: Counter[str]) -> None:
        log.info("%s's first denoiser call ran attention on %s", name, describe(kernels))
        if device != "cpu" and kernels[MATH]:
            log.warning(
                "%s runs %d of its attention calls on the math fallback on %s (no fused kernel "
                "took them: fp32 weights, or a torch build without them); it is several times "
                "slower and holds the whole attention matrix: set the entry's dtype (bf16/fp16)",
                name, kernels[MATH], device,
            )  # fmt: skip

    return report
