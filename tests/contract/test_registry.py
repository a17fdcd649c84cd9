"""The registry file: names from keys, paths relative to the file, known architectures only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contract.registry import ModelRegistry
from jobs.settings import REPO_ROOT


def test_registry_paths_are_relative_to_the_file_and_latent_space_follows_architecture(
    tmp_path: Path,
) -> None:
    (tmp_path / "reg.yaml").write_text(
        "models:\n  a:\n    architecture: sdxl-refiner\n    source: {folder: models/a}\n"
    )
    registry = ModelRegistry.load(tmp_path / "reg.yaml")
    entry = registry.models["a"]
    assert entry.source.folder == (tmp_path / "models" / "a").resolve()  # type: ignore[union-attr]
    assert entry.latent_space.name == "sdxl"


def test_a_single_files_paths_its_t5_too_are_relative_to_the_registry(tmp_path: Path) -> None:
    (tmp_path / "reg.yaml").write_text(
        "models:\n  f:\n    architecture: flux\n    source: {single_file: m/flux-Q8_0.gguf, "
        "config: m/flux, t5: m/t5-encoder-Q8_0.gguf}\n"
    )
    source = ModelRegistry.load(tmp_path / "reg.yaml").models["f"].source
    assert source.t5 == (tmp_path / "m" / "t5-encoder-Q8_0.gguf").resolve()  # type: ignore[union-attr]
    assert source.config == (tmp_path / "m" / "flux").resolve()  # type: ignore[union-attr]


def test_registry_rejects_unknown_architectures(tmp_path: Path) -> None:
    (tmp_path / "reg.yaml").write_text(
        "models:\n  a:\n    architecture: sd9\n    source: {folder: x}\n"
    )
    with pytest.raises(ValueError, match="unknown architecture 'sd9'"):
        ModelRegistry.load(tmp_path / "reg.yaml")


def test_fp8_storage_and_compile_are_refused_together_and_quantize_names_what_it_does() -> None:
    entry = {"architecture": "flux", "source": {"folder": "/models/flux"}}
    with pytest.raises(ValueError, match=r"fp8-storage .* torch.compile"):
        ModelRegistry.model_validate(
            {"models": {"a": {**entry, "quantize": "fp8-storage", "compile": True}}}
        )
    compiled = {**entry, "quantize": "fp8", "compile": True}  # torchao's fp8 compiles
    assert ModelRegistry.model_validate({"models": {"a": compiled}}).models["a"].quantize == "fp8"
    with pytest.raises(ValueError, match="quantize"):
        ModelRegistry.model_validate({"models": {"a": {**entry, "quantize": "int4"}}})


def write_lora(path: Path, width: int) -> Path:
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: torch.zeros(4, width)}, path)
    return path


def test_a_loras_architecture_is_read_from_its_file_and_checked_against_the_entry(
    tmp_path: Path,
) -> None:
    write_lora(tmp_path / "loras" / "xl-detail.safetensors", 2048)
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(
        "models: {}\nloras:\n  xl-detail: {file: loras/xl-detail.safetensors}\n"
        "  remote: {architecture: flux, file: /not/mounted/here.safetensors}\n"
    )
    loras = ModelRegistry.load(registry_file).loras
    assert (loras["xl-detail"].architecture, loras["xl-detail"].architecture_from) == (
        "sdxl",
        "header",
    )
    # Not readable where the registry is loaded (a gateway without the files): as written.
    assert (loras["remote"].architecture, loras["remote"].architecture_from) == ("flux", "registry")
    registry_file.write_text(
        "models: {}\nloras:\n  xl-detail: {architecture: sd15, file: loras/xl-detail.safetensors}\n"
    )
    with pytest.raises(
        ValueError, match=r"the registry says sd15, but xl-detail\.safetensors's keys"
    ):
        ModelRegistry.load(registry_file)
    write_lora(tmp_path / "loras" / "tiny.safetensors", 32)
    registry_file.write_text("models: {}\nloras:\n  tiny: {file: loras/tiny.safetensors}\n")
    with pytest.raises(ValueError, match="does not show it in its keys; write its architecture"):
        ModelRegistry.load(registry_file)


def test_a_lora_that_shows_only_fluxs_names_may_be_declared_for_chroma(tmp_path: Path) -> None:
    # Chroma keeps Flux's blocks: a Chroma LoRA that adapts attention alone reads as Flux's. The
    # registry may say chroma (and is then the one that says it), but not sd15.
    path = tmp_path / "attention-only.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 3072)},
              path)  # fmt: skip
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(f"models: {{}}\nloras:\n  a: {{architecture: chroma, file: {path}}}\n")
    lora = ModelRegistry.load(registry_file).loras["a"]
    assert (lora.architecture, lora.architecture_from) == ("chroma", "registry")
    registry_file.write_text(f"models: {{}}\nloras:\n  a: {{file: {path}}}\n")
    assert ModelRegistry.load(registry_file).loras["a"].architecture == "flux"
    registry_file.write_text(f"models: {{}}\nloras:\n  a: {{architecture: sd15, file: {path}}}\n")
    with pytest.raises(ValueError, match="the registry says sd15, but attention-only"):
        ModelRegistry.load(registry_file)


def test_lora_folders_add_every_file_an_entry_does_not_name(tmp_path: Path) -> None:
    write_lora(tmp_path / "loras" / "add-detail.safetensors", 768)
    write_lora(tmp_path / "loras" / "pinned.safetensors", 32)
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(
        "models: {}\nlora_folders: [loras]\n"
        "loras:\n  pinned: {architecture: sd15, file: loras/pinned.safetensors}\n"
    )
    loras = ModelRegistry.load(registry_file).loras
    assert sorted(loras) == ["add-detail", "pinned"]
    assert loras["add-detail"].architecture == "sd15"
    assert loras["add-detail"].file == tmp_path / "loras" / "add-detail.safetensors"


# A Flux model first by name, an SD1.5 one first in the file (a refiner draws from no text).
FLUX_FIRST_BY_NAME = """\
models:
  xl-refiner: {architecture: sdxl-refiner, source: {folder: m/r}}
  my-sd15: {architecture: sd15, source: {folder: m/sd15}}
  a-flux: {architecture: flux, source: {folder: m/flux}}
"""


def test_the_a1111_default_is_the_first_text_to_image_model_in_the_files_order(
    tmp_path: Path,
) -> None:
    (tmp_path / "reg.yaml").write_text(FLUX_FIRST_BY_NAME)
    registry = ModelRegistry.load(tmp_path / "reg.yaml")
    assert list(registry.models) == ["xl-refiner", "my-sd15", "a-flux"]  # as written
    assert registry.a1111_checkpoint == "my-sd15"
    (tmp_path / "reg.yaml").write_text(FLUX_FIRST_BY_NAME + "a1111_default_checkpoint: a-flux\n")
    assert ModelRegistry.load(tmp_path / "reg.yaml").a1111_checkpoint == "a-flux"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("v1-5", "'v1-5' is not a registered model"),
        ("xl-refiner", "'xl-refiner' is sdxl-refiner, which does not draw from text"),
    ],
)
def test_an_a1111_default_that_draws_nothing_fails_the_load_naming_the_field(
    tmp_path: Path, name: str, why: str
) -> None:
    (tmp_path / "reg.yaml").write_text(FLUX_FIRST_BY_NAME + f"a1111_default_checkpoint: {name}\n")
    with pytest.raises(ValueError, match=f"a1111_default_checkpoint: {why}") as failed:
        ModelRegistry.load(tmp_path / "reg.yaml")
    assert "name a text-to-image model of this registry (my-sd15, a-flux)" in str(failed.value)


@pytest.mark.parametrize("registry", ["registry.demo.yaml", "registry.docker.yaml"])
def test_the_demo_registries_a1111_default_is_demo_sd15(registry: str) -> None:
    assert ModelRegistry.load(REPO_ROOT / "deploy" / registry).a1111_checkpoint == "demo-sd15"


def test_no_pool_may_take_the_webhook_queues_name() -> None:
    entry = {"architecture": "sd15", "source": {"folder": "m"}, "pool": "webhooks"}
    with pytest.raises(ValueError, match="pool 'webhooks' is the webhook queue's name"):
        ModelRegistry.model_validate({"models": {"m": entry}})
