"""T5 encoder files in place of the config folder's (`source.t5`), written from the demo T5 as
the model sites ship T5-XXL: city96's GGUF (llama.cpp's names, written with the `gguf` package
and its own name map), ComfyUI's fp16, fp8 and scaled-fp8 safetensors (Hugging Face's names).
Each goes with demo-flux's Q8_0 transformer file (and one with demo-sd35's scaled-fp8 file,
read by diffusers' own loader) through the worker's real loader, against the same transformer
with the folder's T5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.quantizers.gguf.utils import GGUFLinear
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from contract.registry import ModelEntry
from demo.quantized import scaled_fp8, t5_as_gguf
from tests.drawing import picture
from tests.helpers import registry_of
from workers.models.cache import ModelCache, ModelUnavailable

E4M3 = torch.float8_e4m3fn


def _t5(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(folder.glob("*.safetensors")))


@pytest.fixture(scope="module")
def cache(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    root = tmp_path_factory.mktemp("t5-files")
    t5 = _t5(demo_models / "demo-flux" / "text_encoder_2")
    files = {
        "gguf": demo_models / "demo-quantized" / "demo-t5-encoder-Q8_0.gguf",
        "fp16": root / "t5xxl_fp16.safetensors",  # the folder's weights, as ComfyUI ships them
        "fp8": root / "t5xxl_fp8_e4m3fn.safetensors",
        "scaled": root / "t5xxl_fp8_e4m3fn_scaled.safetensors",
        "clip": next((demo_models / "demo-flux" / "text_encoder").glob("*.safetensors")),
    }
    save_file(t5, files["fp16"])
    save_file({k: v.to(E4M3) if v.ndim == 2 else v for k, v in t5.items()}, files["fp8"])
    save_file(scaled_fp8(t5, ("",)), files["scaled"])
    quantized = demo_models / "demo-quantized"
    flux = {"single_file": str(quantized / "demo-flux-Q8_0.gguf"),
            "config": str(demo_models / "demo-flux")}  # fmt: skip
    models: dict[str, dict[str, object]] = {
        "flux": {"architecture": "flux", "device": "cpu", "source": flux},
        **{
            f"flux-t5-{kind}": {"architecture": "flux", "device": "cpu",
                                "source": {**flux, "t5": str(path)}}
            for kind, path in files.items()
        },
    }  # fmt: skip
    sd35 = {"single_file": str(quantized / "demo-sd35-fp8-scaled.safetensors"),
            "config": str(demo_models / "demo-sd35")}  # fmt: skip
    sd35_t5 = t5_as_gguf(_t5(demo_models / "demo-sd35" / "text_encoder_3"), 2, root / "t5.gguf")
    models["sd35"] = {"architecture": "sd35", "device": "cpu", "source": sd35}
    models["sd35-t5-gguf"] = {"architecture": "sd35", "device": "cpu",
                              "source": {**sd35, "t5": str(sd35_t5)}}  # fmt: skip
    return ModelCache(registry_of(models))


def _budget_counts_what_is_resident(cache: ModelCache, name: str) -> None:
    model = cache.get(name)
    estimate = cache._estimate(cache.registry.models[name], torch.float32, set())
    assert estimate == pytest.approx(model.param_bytes, rel=0.01)


@pytest.mark.parametrize(("name", "base", "component"), [
    ("flux-t5-gguf", "flux", "text_encoder_2"),
    ("sd35-t5-gguf", "sd35", "text_encoder_3"),
])  # fmt: skip
def test_a_gguf_t5_stays_quantized_but_its_feed_forward_output_and_draws_close(
    cache: ModelCache, name: str, base: str, component: str
) -> None:
    held, folder = cache.get(name), cache.get(base)
    t5 = getattr(held.text, component)
    quantized = {n for n, m in t5.named_modules() if isinstance(m, GGUFLinear)}
    assert "encoder.block.0.layer.0.SelfAttention.q" in quantized
    # transformers casts the feed-forward's input to wo's weight dtype: wo is held wide.
    assert not any(n.endswith(".DenseReluDense.wo") for n in quantized)
    assert held.held[component].storage == ["Q8_0", "float32"]
    assert t5.encoder.embed_tokens.weight is t5.shared.weight  # one copy, tied
    drawn, reference = picture(held), picture(folder)
    assert np.isfinite(drawn).all()
    # Measured: a mean 0.00005 (Flux) and 0.0002 (SD3.5) from the folder T5's picture.
    assert np.abs(drawn - reference).mean() < 0.01
    assert np.abs(drawn - reference).max() > 0  # quantized: not the folder's weights
    _budget_counts_what_is_resident(cache, name)


def test_t5_safetensors_files_in_the_models_dtype_in_fp8_and_scaled(cache: ModelCache) -> None:
    folder = picture(cache.get("flux"))
    assert np.array_equal(picture(cache.get("flux-t5-fp16")), folder)  # the same weights
    for kind in ("fp8", "scaled"):
        held = cache.get(f"flux-t5-{kind}")
        t5 = held.text.text_encoder_2
        assert held.held["text_encoder_2"].storage == ["float32", "float8_e4m3fn"]
        assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == E4M3
        assert t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
        drawn = picture(held)
        assert np.isfinite(drawn).all()
        assert drawn.std() > 0.01
        # Measured: a mean 0.00022 (fp8: the values rounded to e4m3) and 0.00044 (scaled).
        assert np.abs(drawn - folder).mean() < 0.02
        _budget_counts_what_is_resident(cache, f"flux-t5-{kind}")


def test_a_file_that_is_not_a_t5_encoder_is_refused_naming_what_differs(
    cache: ModelCache,
) -> None:
    with pytest.raises(ModelUnavailable, match="is not a T5 encoder file of the config folder"):
        cache.get("flux-t5-clip")


def test_an_architecture_without_t5_takes_no_t5_file() -> None:
    source = {"single_file": "/m/sd15.safetensors", "config": "/m/sd15", "t5": "/m/t5.gguf"}
    with pytest.raises(ValidationError, match=r"CLIP-L: no T5; drop source\.t5"):
        ModelEntry.model_validate({"name": "sd", "architecture": "sd15", "source": source})
