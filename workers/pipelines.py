"""Loading a registered model into diffusers pipelines: one source of weights, two call styles.

Every model gets a *text* pipeline (txt2img; for a refiner, its img2img) and an *image* pipeline
(img2img), built with `from_pipe` so that both share every module object: the second costs no
memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    DiffusionPipeline,
    FluxImg2ImgPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    ModelMixin,
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import SingleFileComponentError

from contract.registry import FolderSource, HubSource, ModelEntry, SingleFileSource
from contract.safetensors_header import read_header
from workers.checkpoint_probe import diagnose, probe_architecture
from workers.flux_files import load_flux_file

log = logging.getLogger("imagegen.worker")


@dataclass(frozen=True)
class PipelineClasses:
    text: type[DiffusionPipeline]
    image: type[DiffusionPipeline]
    denoiser: type[ModelMixin]
    denoiser_folder: str


# fmt: off
PIPELINES: dict[str, PipelineClasses] = {
    "sd15": PipelineClasses(StableDiffusionPipeline, StableDiffusionImg2ImgPipeline,
                            UNet2DConditionModel, "unet"),
    "sdxl": PipelineClasses(StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline,
                            UNet2DConditionModel, "unet"),
    "sdxl-refiner": PipelineClasses(StableDiffusionXLImg2ImgPipeline,
                                    StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel, "unet"),
    "flux": PipelineClasses(FluxPipeline, FluxImg2ImgPipeline, FluxTransformer2DModel,
                            "transformer"),
    "sd35": PipelineClasses(StableDiffusion3Pipeline, StableDiffusion3Img2ImgPipeline,
                            SD3Transformer2DModel, "transformer"),
}
# fmt: on

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    if requested != "auto":
        return _DTYPES[requested]
    # Half precision is what GPUs are fast at; CPUs are fast (and exact) in fp32.
    return torch.float16 if device in ("cuda", "mps") else torch.float32


def load_text_pipeline(
    entry: ModelEntry, device: str, dtype: torch.dtype, shared: dict[str, torch.nn.Module]
) -> DiffusionPipeline:
    """Load `entry`'s weights; `shared` passes already-loaded modules (e.g. the SDXL VAE)."""
    cls = PIPELINES[entry.architecture].text
    source = entry.source
    common = {"torch_dtype": dtype, **shared}
    if isinstance(source, FolderSource):
        pipe = cls.from_pretrained(str(source.folder), local_files_only=True, **common)
    elif isinstance(source, SingleFileSource):
        pipe = _load_single_file(entry, source, cls, common)
    elif isinstance(source, HubSource):
        pipe = cls.from_pretrained(source.hub, revision=source.revision, **common)
    else:  # pragma: no cover - the registry admits no other source
        raise TypeError(f"unknown source {source!r}")
    _check_flux_variant(entry, pipe)
    pipe.set_progress_bar_config(disable=True)
    if entry.vae_tiling:
        pipe.vae.enable_tiling()
    if entry.cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def image_pipeline_of(entry: ModelEntry, text_pipe: DiffusionPipeline) -> DiffusionPipeline:
    cls = PIPELINES[entry.architecture].image
    if isinstance(text_pipe, cls):
        return text_pipe
    pipe = cls.from_pipe(text_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ArchitectureMismatch(ValueError):
    pass


def _check_flux_variant(entry: ModelEntry, pipe: DiffusionPipeline) -> None:
    """The registry's `variant` against the weights: dev embeds the guidance scale."""
    if entry.architecture != "flux" or entry.variant is None:
        return
    loaded = "dev" if pipe.transformer.config.guidance_embeds else "schnell"
    if loaded != entry.variant:
        raise ArchitectureMismatch(
            f"the registry says Flux {entry.variant}, but the weights are Flux {loaded} "
            f"({'with' if loaded == 'dev' else 'without'} guidance embeddings); fix the "
            "entry's variant"
        )


def _check_flux_file_against_config(path: Path, config: Path) -> None:
    """A Flux file and its config folder must be the same variant: dev weights with a schnell
    config lose their guidance weights silently; schnell weights with a dev config fail with a
    meta-tensor error that names neither."""
    header = read_header(path) or {}
    in_file = (
        "dev"
        if any("guidance_in." in k or "guidance_embedder" in k for k in header)
        else ("schnell")
    )
    settings = config / "transformer" / "config.json"
    if not settings.is_file():
        return
    in_config = "dev" if json.loads(settings.read_text()).get("guidance_embeds") else "schnell"
    if in_file != in_config:
        raise ArchitectureMismatch(
            f"{path.name} is a Flux {in_file} checkpoint "
            f"({'with' if in_file == 'dev' else 'without'} guidance embeddings), but its config "
            f"folder {config} is for Flux {in_config}; point config at a {in_file} folder"
        )


def _as_safetensors(path: Path) -> Path:
    """The file under a `.safetensors` name if it is one: diffusers picks its reader by the
    extension, and read BFL's `.sft` or a `.SAFETENSORS` as a pickle, which fails."""
    if path.suffix == ".safetensors" or read_header(path) is None:
        return path
    links = Path(tempfile.gettempdir()) / "imagegen-single-files"
    links.mkdir(exist_ok=True)
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    link = links / f"{name}-{path.stem}.safetensors"
    if not link.exists():
        link.symlink_to(path.resolve())
    return link


def _load_single_file(
    entry: ModelEntry, source: SingleFileSource, cls: type[DiffusionPipeline], common: dict
) -> DiffusionPipeline:
    found = probe_architecture(source.single_file)
    if found is not None and found != entry.architecture:
        raise ArchitectureMismatch(
            f"{source.single_file.name} is a {found} checkpoint, but the registry says "
            f"{entry.architecture}; fix the entry's architecture"
        )
    # Refused before loading: a scaled-fp8 file, for one, loads "fine" and draws NaN.
    unloadable = diagnose(source.single_file)
    if unloadable is not None:
        raise ArchitectureMismatch(unloadable)
    if entry.architecture == "flux":
        _check_flux_file_against_config(source.single_file, source.config)
        # diffusers' reader for these takes only the released width and breaks on all-in-one
        # files; ours reads any layout model sites ship (see flux_files).
        return load_flux_file(source.single_file, source.config, cls, common["torch_dtype"])
    path, config = str(_as_safetensors(source.single_file)), str(source.config)
    try:
        # A full checkpoint (denoiser, VAE and text encoders in one file, as most SD ones are).
        return cls.from_single_file(path, config=config, local_files_only=True, **common)
    except SingleFileComponentError:
        # Denoiser only: the rest comes from the config folder.
        classes = PIPELINES[entry.architecture]
        denoiser = classes.denoiser.from_single_file(
            path,
            config=config,
            subfolder=classes.denoiser_folder,
            local_files_only=True,
            torch_dtype=common["torch_dtype"],
        )
        return cls.from_pretrained(
            config, local_files_only=True, **{classes.denoiser_folder: denoiser}, **common
        )
