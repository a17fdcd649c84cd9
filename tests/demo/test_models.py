"""The demo models: real diffusers folders that keep each architecture's latent space, built
the same way every time."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

from demo.models import ensure_built


@pytest.mark.parametrize(
    ("name", "channels", "scaling", "shift"),
    [
        ("demo-sd15", 4, 0.18215, None),
        ("demo-sdxl", 4, 0.13025, None),
        ("demo-sdxl-refiner", 4, 0.13025, None),
        ("demo-flux", 16, 0.3611, 0.1159),
        ("demo-chroma", 16, 0.3611, 0.1159),
        ("demo-sd35", 16, 1.5305, 0.0609),
    ],
)
def test_demo_models_keep_each_architectures_latent_space(
    demo_models: Path, name: str, channels: int, scaling: float, shift: float | None
) -> None:
    pipe = DiffusionPipeline.from_pretrained(demo_models / name, local_files_only=True)
    vae = pipe.vae.config
    assert vae.latent_channels == channels
    assert vae.scaling_factor == scaling
    assert vae.shift_factor == shift
    assert 2 ** (len(vae.block_out_channels) - 1) == 8  # the real VAE downscale


def test_demo_architectures_are_true_to_the_real_ones(demo_models: Path) -> None:
    flux = DiffusionPipeline.from_pretrained(demo_models / "demo-flux", local_files_only=True)
    assert flux.transformer.config.in_channels == 64  # 16 channels packed 2x2
    assert flux.transformer.config.guidance_embeds
    assert type(flux.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert type(flux.text_encoder_2).__name__ == "T5EncoderModel"
    sdxl = DiffusionPipeline.from_pretrained(demo_models / "demo-sdxl", local_files_only=True)
    assert sdxl.unet.config.addition_embed_type == "text_time"
    assert sdxl.text_encoder is not None
    assert sdxl.text_encoder_2 is not None
    refiner = DiffusionPipeline.from_pretrained(demo_models / "demo-sdxl-refiner")
    assert refiner.text_encoder is None  # text_encoder_2 only, like the real refiner
    assert refiner.config.requires_aesthetics_score
    # Base and refiner share one VAE, as the real SDXL pair does.
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            sdxl.vae.state_dict().values(), refiner.vae.state_dict().values(), strict=True
        )
    )
    sd15 = DiffusionPipeline.from_pretrained(demo_models / "demo-sd15")
    assert sd15.tokenizer.model_max_length == 77
    # Chroma keeps Flux's VAE itself, and T5 alone.
    chroma = DiffusionPipeline.from_pretrained(demo_models / "demo-chroma", local_files_only=True)
    assert type(chroma.transformer).__name__ == "ChromaTransformer2DModel"
    assert chroma.transformer.config.in_channels == 64
    assert type(chroma.text_encoder).__name__ == "T5EncoderModel"
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            flux.vae.state_dict().values(), chroma.vae.state_dict().values(), strict=True
        )
    )


def test_demo_build_is_deterministic(tmp_path: Path, demo_models: Path) -> None:
    ensure_built(tmp_path, ("demo-sd15",))

    def digest(root: Path) -> str:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "demo_build.json")
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    assert digest(tmp_path / "demo-sd15") == digest(demo_models / "demo-sd15")


def test_the_demo_loras_are_built_after_the_models_they_adapt_the_same_way_every_time(
    tmp_path: Path, demo_models: Path
) -> None:
    built = ensure_built(tmp_path, ("demo-loras",))
    assert [folder.name for folder in built] == ["demo-sd15", "demo-flux", "demo-loras"]
    assert sorted(p.name for p in (tmp_path / "demo-loras").glob("*.safetensors")) == [
        "demo-flux-lora.safetensors",
        "demo-sd15-lora.safetensors",
    ]
    for lora in (tmp_path / "demo-loras").glob("*.safetensors"):
        assert lora.read_bytes() == (demo_models / "demo-loras" / lora.name).read_bytes()


def test_builders_started_together_take_turns(tmp_path: Path) -> None:
    # Two test processes on a fresh clone both build the missing models at start.
    results: list[object] = []

    def build() -> None:
        try:
            results.append(ensure_built(tmp_path, ("demo-sd15",)))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r) for r in results if isinstance(r, list)) == [0, 1], results
    assert (tmp_path / "demo-sd15" / "model_index.json").exists()


def test_every_demo_file_is_readable_by_any_user(demo_models: Path) -> None:
    """A worker container's user (another uid) reads them through a read-only mount."""
    for path in [demo_models, *demo_models.rglob("*")]:
        if path.name.startswith("."):
            continue  # the build lock and partial folders are the builder's own
        mode = path.stat().st_mode
        wanted = 0o555 if path.is_dir() else 0o444
        assert mode & wanted == wanted, f"{path} is {oct(mode)}"
