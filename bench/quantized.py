"""P9: a Flux transformer at its released width held in fp8 (a plain fp8 file's weights), in
GGUF Q8_0 (a city96 file's) and in bitsandbytes NF4 (a Forge file's) against the same weights
in bf16: resident bytes and the time of one denoising step, on this CPU, in one run.

    python -m bench.quantized

The module: one double and one single block at Flux's width (3,072; 24 heads of 128) and its
embedders (T5-XXL's 4,096-wide context), random weights rounded to e4m3 as an fp8 file stores
them, 256 image tokens (a 256² picture) and 64 text tokens. fp8 is held by
`workers.models.fp8.keep_in_fp8`, each layer computing in bf16; Q8_0 by the GGUF loader
(`workers.families.gguf_files.assign_quantized`, each matrix quantized by the `gguf` package as
city96's converter does, dequantized to bf16 per forward). bf16 is timed before and after (the
machine drifts).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import gguf
import torch
from accelerate import init_empty_weights
from diffusers import FluxTransformer2DModel
from diffusers.quantizers.gguf.utils import GGUFParameter

from workers.families.gguf_files import assign_quantized
from workers.families.nf4_files import quantize_to_4bit
from workers.models.fp8 import adapters_made_in_compute_dtype, keep_in_fp8

IMAGE_TOKENS = 256
TEXT_TOKENS = 64
RUNS = 3


_CONFIG = {
    "patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 1,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
_Q8_0 = gguf.GGMLQuantizationType.Q8_0


def _module() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    model = FluxTransformer2DModel(**_CONFIG).to(torch.bfloat16)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):  # what an fp8 file holds
                layer.weight.data = layer.weight.data.to(torch.float8_e4m3fn).to(torch.bfloat16)
    return model.eval()


def _q8_0_of(model: torch.nn.Module) -> FluxTransformer2DModel:
    """The model as its Q8_0 GGUF file loads: every matrix quantized, the rest in bf16."""
    weights: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tensor.ndim == 2 and tensor.shape[1] % 32 == 0:
            blocks = gguf.quants.quantize(tensor.float().numpy(), _Q8_0)
            weights[name] = GGUFParameter(torch.from_numpy(blocks), quant_type=_Q8_0)
        else:
            weights[name] = tensor.clone()
    with init_empty_weights():
        quantized = FluxTransformer2DModel(**_CONFIG)
    assign_quantized(quantized, weights, torch.bfloat16, "the Q8_0 transformer")
    return quantized


def _nf4_of(model: torch.nn.Module) -> torch.nn.Module:
    """The model as a Forge NF4 file loads (`workers.families.nf4_files`): every linear layer
    bitsandbytes' Linear4bit, computing in bf16, the rest in bf16."""
    four_bit = copy.deepcopy(model)
    layers = {n: "nf4" for n, m in four_bit.named_modules() if type(m) is torch.nn.Linear}
    quantize_to_4bit(four_bit, layers, torch.bfloat16)
    return four_bit.to("cpu")  # where bitsandbytes quantizes


def _resident_bytes(model: torch.nn.Module) -> int:
    """Parameters, and a 4-bit weight's block scales beside it."""
    total = _held_bytes(model)
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        while state is not None:
            total += sum(t.numel() * t.element_size() for t in (state.absmax, state.code))
            state = state.state2
    return total


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    return {
        "hidden_states": noise(1, IMAGE_TOKENS, 64),
        "encoder_hidden_states": noise(1, TEXT_TOKENS, 4096),
        "pooled_projections": noise(1, 768),
        "timestep": torch.tensor([0.5], dtype=torch.bfloat16),
        "guidance": torch.tensor([3.5], dtype=torch.bfloat16),
        "img_ids": torch.zeros(IMAGE_TOKENS, 3),
        "txt_ids": torch.zeros(TEXT_TOKENS, 3),
    }


def _held_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _step_s(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[float, torch.Tensor]:
    times = []
    with torch.no_grad():
        for _ in range(RUNS):
            started = time.perf_counter()
            out = model(**inputs, return_dict=False)[0]
            times.append(time.perf_counter() - started)
    return statistics.median(times), out


def measure() -> dict[str, Any]:
    model, inputs = _module(), _inputs()
    bf16_bytes = _held_bytes(model)
    _step_s(model, inputs)  # warm up
    bf16_before, reference = _step_s(model, inputs)
    q8 = _q8_0_of(model)
    q8_bytes = _held_bytes(q8)
    _step_s(q8, inputs)  # warm up: its first dequantization
    q8_s, q8_out = _step_s(q8, inputs)
    del q8
    nf4 = _nf4_of(model)
    nf4_bytes = _resident_bytes(nf4)
    _step_s(nf4, inputs)  # warm up
    nf4_s, nf4_out = _step_s(nf4, inputs)
    del nf4
    held = keep_in_fp8(model, torch.float8_e4m3fn, torch.bfloat16)
    fp8_bytes = _held_bytes(model)
    fp8_s, out = _step_s(model, inputs)
    with adapters_made_in_compute_dtype(model):  # every weight in bf16 again, for the "after"
        bf16_after, _ = _step_s(model, inputs)
    scale = float(reference.float().abs().mean())
    return {
        "weights_in_fp8": held,
        "bf16_bytes": bf16_bytes,
        "fp8_bytes": fp8_bytes,
        "q8_0_bytes": q8_bytes,
        "bf16_step_s": statistics.mean([bf16_before, bf16_after]),
        "fp8_step_s": fp8_s,
        "q8_0_step_s": q8_s,
        "nf4_bytes": nf4_bytes,
        "nf4_step_s": nf4_s,
        "nf4_relative_difference": float((nf4_out.float() - reference.float()).abs().mean())
        / scale,
        "max_difference": float((out.float() - reference.float()).abs().max()),
        # Q8_0 rounds the weights: its output's mean distance, relative to the output's size.
        "q8_0_relative_difference": float((q8_out.float() - reference.float()).abs().mean())
        / scale,
    }


def main() -> int:
    m = measure()
    print(
        f"P9 Flux blocks at width 3072 ({m['weights_in_fp8']} weights held in fp8): resident "
        f"{m['fp8_bytes'] / 2**20:.0f} / {m['bf16_bytes'] / 2**20:.0f} MiB = "
        f"{m['fp8_bytes'] / m['bf16_bytes']:.3f} (target <= 0.55); step "
        f"{m['fp8_step_s']:.2f} / {m['bf16_step_s']:.2f} s = "
        f"{m['fp8_step_s'] / m['bf16_step_s']:.3f}; fp8 and bf16 outputs differ by at most "
        f"{m['max_difference']:.2e}"
    )
    print(
        f"P9 the same in GGUF Q8_0: resident {m['q8_0_bytes'] / 2**20:.0f} / "
        f"{m['bf16_bytes'] / 2**20:.0f} MiB = {m['q8_0_bytes'] / m['bf16_bytes']:.3f} (target "
        f"<= 0.6); step {m['q8_0_step_s']:.2f} / {m['bf16_step_s']:.2f} s = "
        f"{m['q8_0_step_s'] / m['bf16_step_s']:.3f}; output within a mean "
        f"{m['q8_0_relative_difference']:.4f} of bf16's, relative"
    )
    print(
        f"P9 the same in bitsandbytes NF4: resident {m['nf4_bytes'] / 2**20:.0f} / "
        f"{m['bf16_bytes'] / 2**20:.0f} MiB = {m['nf4_bytes'] / m['bf16_bytes']:.3f}; step "
        f"{m['nf4_step_s']:.2f} / {m['bf16_step_s']:.2f} s = "
        f"{m['nf4_step_s'] / m['bf16_step_s']:.3f}; output within a mean "
        f"{m['nf4_relative_difference']:.4f} of bf16's, relative (bitsandbytes' CPU fallback)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
