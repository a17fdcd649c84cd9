"""Loading a registered model into diffusers pipelines: one source of weights, two call styles.

Every model gets a *text* pipeline (txt2img; for a refiner, its img2img) and an *image* pipeline
(img2img), built with `from_pipe` so that both share every module object: the second costs no
memory.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.loaders.single_file_utils import SingleFileComponentError
from transformers import CLIPTextModel, T5EncoderModel

from contract.registry import FolderSource, HubSource, ModelEntry, SingleFileSource
from contract.safetensors_header import read_header
from workers.families import ArchitectureMismatch, Pipelines, pipelines_for
from workers.families.gguf_files import is_gguf
from workers.models.checkpoint_probe import contradicting_architecture, diagnose
from workers.models.fp8 import (
    QuantizeRefused,
    check_fp8_compute,
    compute_in_fp8,
    fp8_storage,
    keep_in_fp8,
    quantize_to_fp8,
)
from workers.models.scaled_fp8 import place_scales
from workers.models.t5_files import read_t5, t5_component

log = logging.getLogger("imagegen.worker")


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
    classes = pipelines_for(entry.architecture)
    cls = classes.text
    source = entry.source
    if entry.quantize == "fp8":  # refused before any weight is read
        check_fp8_compute(device)
    common = {"torch_dtype": dtype, **shared}
    if isinstance(source, FolderSource):
        pipe = cls.from_pretrained(str(source.folder), local_files_only=True, **common)
    elif isinstance(source, SingleFileSource):
        pipe = _load_single_file(entry, source, cls, common)
    elif isinstance(source, HubSource):
        pipe = cls.from_pretrained(source.hub, revision=source.revision, **common)
    else:  # pragma: no cover - the registry admits no other source
        raise TypeError(f"unknown source {source!r}")
    if classes.check_weights is not None:
        classes.check_weights(entry, pipe)
    _mend_flattened_clip(pipe)
    _tie_t5_embedding(pipe)
    pipe.set_progress_bar_config(disable=True)
    if entry.vae_tiling:
        pipe.vae.enable_tiling()
    storage = fp8_storage(source.single_file) if isinstance(source, SingleFileSource) else None
    # Narrowed before it moves: a model that fits the GPU only quantized must not get there
    # wide first. A scaled-fp8 file's scales go on their weights (held in fp8 with them).
    if isinstance(source, SingleFileSource) and classes.scaled_names is not None:
        replaced = frozenset({t5_component(source.config)} if source.t5 is not None else ())
        place_scales(
            pipe, classes.denoiser_of(pipe), source.single_file, source.config,
            classes.scaled_names, keep_fp8=not entry.compile, replaced=replaced,
        )  # fmt: skip
    if entry.quantize == "fp8-storage":
        _quantizable(classes.denoiser_of(pipe), storage)
        quantize_to_fp8(classes.denoiser_of(pipe), dtype)
    if entry.cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    # A plain fp8 file: held as it was shipped (not under torch.compile, whose graphs the
    # per-layer casts would break).
    if storage is not None and not entry.compile:
        keep_in_fp8(classes.denoiser_of(pipe), storage, dtype)
    if entry.quantize == "fp8":  # torchao quantizes on the device it computes on
        _quantizable(classes.denoiser_of(pipe), storage)
        compute_in_fp8(classes.denoiser_of(pipe), device)
    return pipe


def _quantizable(denoiser: torch.nn.Module, storage: torch.dtype | None) -> None:
    """QuantizeRefused for weights the registry's `quantize:` would quantize again."""
    if storage is not None:
        raise QuantizeRefused("its file stores fp8 already, kept so; drop quantize")
    if any(hasattr(p, "quant_type") for p in denoiser.parameters()):  # GGUFParameter
        raise QuantizeRefused("its weights are GGUF-quantized already; drop quantize")


def _mend_flattened_clip(pipe: DiffusionPipeline) -> None:
    """diffusers' SD pipelines read `text_encoder.text_model.final_layer_norm` when asked for a
    clip_skip, but transformers 5.6 flattened CLIPTextModel: its layers are its own now, and
    `text_model` is gone (diffusers issue 14124, open). Give each such encoder `text_model` as a
    plain attribute naming itself: written past nn.Module's __setattr__, it is no submodule, so
    state dicts, LoRA adapters and the memory count see the encoder as it is."""
    for component in pipe.components.values():
        if isinstance(component, CLIPTextModel) and not hasattr(component, "text_model"):
            object.__setattr__(component, "text_model", component)


def _tie_t5_embedding(pipe: DiffusionPipeline) -> None:
    """diffusers' reader of a file that bundles T5 (SD3.5's all-in-one files) loads its tied
    input embedding once, as `shared`, and leaves `encoder.embed_tokens` on the meta device,
    where the first move fails ("Cannot copy out of meta tensor"). Tie it, as the model's
    own loader does."""
    for component in pipe.components.values():
        if isinstance(component, T5EncoderModel) and component.encoder.embed_tokens.weight.is_meta:
            component.encoder.embed_tokens.weight = component.shared.weight


def image_pipeline_of(entry: ModelEntry, text_pipe: DiffusionPipeline) -> DiffusionPipeline:
    classes = pipelines_for(entry.architecture)
    if isinstance(text_pipe, classes.image):
        return text_pipe
    return _derived(classes.image, text_pipe, classes)


def inpaint_pipeline_of(entry: ModelEntry, text_pipe: DiffusionPipeline) -> DiffusionPipeline:
    """The family's inpainting pipeline over the loaded modules (no second copy of a weight)."""
    classes = pipelines_for(entry.architecture)
    cls = classes.fill if entry.inpainting and classes.fill is not None else classes.inpaint
    if cls is None:
        raise ArchitectureMismatch(f"{entry.architecture} has no inpainting pipeline here")
    return _derived(cls, text_pipe, classes)


def _derived(
    cls: type[DiffusionPipeline], text_pipe: DiffusionPipeline, classes: Pipelines
) -> DiffusionPipeline:
    """A pipeline of `cls` sharing every module of `text_pipe`, mended as its family says."""
    pipe = cls.from_pipe(text_pipe)
    pipe.set_progress_bar_config(disable=True)
    if classes.mend_image is not None:
        classes.mend_image(pipe)
    return pipe


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
    found = contradicting_architecture(source.single_file, entry.architecture)
    if found is not None:
        raise ArchitectureMismatch(
            f"{source.single_file.name} is a {found} checkpoint, but the registry says "
            f"{entry.architecture}; fix the entry's architecture"
        )
    # Refused before loading: a scaled-fp8 file, for one, loads "fine" and draws NaN.
    classes = pipelines_for(entry.architecture)
    unloadable = diagnose(
        source.single_file, classes.reads_scaled_fp8, classes.reads_gguf, entry.inpainting,
        classes.reads_four_bit,
    )  # fmt: skip
    if unloadable is not None:
        raise ArchitectureMismatch(unloadable)
    if source.t5 is not None:  # in place of the folder's and any the file bundles
        common = {
            **common,
            t5_component(source.config): read_t5(source.t5, source.config, common["torch_dtype"]),
        }
    given = {k: v for k, v in common.items() if k != "torch_dtype"}
    if classes.read_single_file is not None:
        return classes.read_single_file(entry, source, cls, common["torch_dtype"], given)
    if classes.read_gguf is not None and is_gguf(source.single_file):
        return classes.read_gguf(entry, source, cls, common["torch_dtype"], given)
    path, config = str(_as_safetensors(source.single_file)), str(source.config)
    try:
        # A full checkpoint (denoiser, VAE and text encoders in one file, as most SD ones are).
        return cls.from_single_file(path, config=config, local_files_only=True, **common)
    except SingleFileComponentError:
        # Denoiser only: the rest comes from the config folder.
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
