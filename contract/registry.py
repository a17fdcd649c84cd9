"""The model registry: which models this deployment serves, and where their weights live.

A YAML file maps a model name to its architecture and source:

    models:
      my-sd15:
        architecture: sd15
        source: {folder: /models/my-sd15}          # a diffusers folder
        dtype: fp16
        device: auto
        preload: true
        pool: sd                                   # served by workers of pool "sd"
      my-sdxl:
        architecture: sdxl
        source: {single_file: /models/sdxl.safetensors, config: /models/sdxl-config}
      flux-dev:
        architecture: flux
        variant: dev                               # or schnell: checked against the weights
                                                   # (SD1.5, SDXL: inpainting, a 9-channel UNet)
        source: {hub: black-forest-labs/FLUX.1-dev}  # only where the hub is reachable

LoRAs are listed beside the models; the architecture each was trained for is read from its
file's header (`contract.lora_files`), or written where the keys do not show it (or the file is
not readable where the registry is loaded). Every LoRA in a folder can be listed at once:

    loras:
      detail-tweaker:
        file: /models/loras/detail-tweaker.safetensors
      odd-one:
        architecture: sdxl
        file: /models/loras/odd-one.safetensors
    lora_folders: [/models/loras]               # named by file name, as A1111 names them

VAEs decode (and encode) a stage's pictures in place of its model's own, and only for models
of the latent space they were trained in. An SD1.5 VAE and an SDXL VAE have the same shapes, so
a file's entry names its latent space; the registry refuses to load where the file's channels
contradict it (`contract.vae_files`). A diffusers folder's config says its latent space itself.
A folder of VAE files of one latent space is listed with it:

    vaes:
      sdxl-fp16-fix:
        latent_space: sdxl
        file: /models/vae/sdxl_vae_fp16_fix.safetensors   # LDM (A1111) or diffusers layout
      ft-mse:
        folder: /models/vae/sd-vae-ft-mse                 # a diffusers folder: config.json
    vae_folders:
      - {folder: /models/vae/sd15, latent_space: sd1}   # named by file name, as A1111 names them

Textual-inversion embeddings are named in prompts, as in A1111's; the architecture each was
trained for is read from its header (`contract.embedding_files`), or written where it does not
show (a `.pt` pickle, which the gateway does not open):

    embeddings:
      easynegative: {file: /models/embeddings/easynegative.safetensors}
      old-style: {architecture: sd15, file: /models/embeddings/old-style.pt}
    embedding_folders: [/models/embeddings]      # named by file name

ControlNets are listed the same way, each file's (or diffusers folder's) architecture read from
its header or config (`contract.controlnet_files`), never from its name:

    controlnets:
      canny-sdxl: {file: /models/controlnet/controlnet-canny-sdxl-1.0}   # a diffusers folder
      depth-sd15: {file: /models/controlnet/control_v11f1p_sd15_depth.safetensors}
    controlnet_folders: [/models/controlnet]

IP-Adapters too (`contract.ip_adapter_files`), each with the CLIP image encoder it reads pictures
with: a transformers folder, by default the `image_encoder/` beside the file (h94's layout):

    ip_adapters:
      ip-adapter-sd15: {file: /models/ipadapter/models/ip-adapter_sd15.safetensors}
      ip-adapter-sdxl:
        file: /models/ipadapter/sdxl_models/ip-adapter_sdxl.safetensors
        image_encoder: /models/ipadapter/sdxl_models/image_encoder
    ip_adapter_folders: [/models/ipadapter/models]   # named by file name

Upscaler model files (for pixel hires stages: `upscaler: <name>`) are listed the same way; the
worker reads their architecture and scale from the weights:

    upscalers:
      4x-ultrasharp:
        file: /models/upscalers/4x-UltraSharp.safetensors

Presets name chains of stages, so that a client that knows one model string gets a whole chain
(the article's SD1.5 base with a Flux hires fix): a job's only stage naming a preset takes its
stages (`contract.presets`), and each one is checked by the job rules when the service loads the
registry (`contract.job_rules.load_registry`):

    presets:
      sd15-flux-hires:
        description: SD1.5 draws, Flux refines it at twice the size
        stages:
          - {model: my-sd15}
          - {model: my-flux, mode: hires, handoff: pixel, denoise: 0.4}

The A1111 face (`/sdapi/v1`) draws with the first text-to-image model in the file's order when
a request names no checkpoint; a top-level entry picks another:

    a1111_default_checkpoint: my-sdxl

Relative paths are relative to the registry file. The latent space is never written down: it
follows from the architecture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.architectures import (
    ARCHITECTURES,
    Architecture,
    KeysOf,
    controlnets_of,
    ip_adapters_of,
    serving,
)
from contract.controlnet_files import discover_controlnets, probe_controlnet
from contract.embedding_files import discover_embeddings, probe_embedding
from contract.ip_adapter_files import (
    IMAGE_ENCODER_FOLDER,
    discover_ip_adapters,
    encoder_width,
    probe_ip_adapter,
)
from contract.latent_spaces import LATENT_SPACES, LatentSpace, LatentSpaceName
from contract.lora_files import discover_loras, fits_declared, probe_lora
from contract.names import MODEL_NAME_PATTERN
from contract.resamplers import Upscaler
from contract.spec import MAX_STAGES, Stage
from contract.vae_files import probe_vae

log = logging.getLogger("imagegen.registry")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FolderSource(_Strict):
    folder: Path


class SingleFileSource(_Strict):
    single_file: Path
    # A local diffusers folder with the configs (and tokenizers) for the checkpoint: loading a
    # single file without one would fetch them from the hub.
    config: Path
    # A T5 encoder file in place of the config folder's (and of one the single file bundles):
    # city96's GGUF (`t5-v1_1-xxl-encoder-Q8_0.gguf`, kept quantized) or a safetensors file in
    # Hugging Face's layout (ComfyUI's `t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`,
    # its scaled one); workers/models/t5_files.py.
    t5: Path | None = None


class HubSource(_Strict):
    hub: str
    revision: str | None = None


ModelSource = FolderSource | SingleFileSource | HubSource


def known_architecture(value: str) -> str:
    if value not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {value!r}; known: {', '.join(ARCHITECTURES)}")
    return value


def served_only(kind: str, keys_of: KeysOf) -> Callable[[str], str]:
    """A check that the worker serves an architecture's `kind` (ControlNets, IP-Adapters)."""

    def check(value: str) -> str:
        keys = keys_of(ARCHITECTURES[value])
        if keys is None or not keys.served:
            why = "are not served here yet" if keys is not None else "are not made"
            raise ValueError(f"{value} {kind} {why}; those of {', '.join(serving(keys_of))} are")
        return value

    return check


class ModelEntry(_Strict):
    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    architecture: str
    source: ModelSource
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    preload: bool = False
    # Workers serve one pool each; a job's stages on different pools run on different workers
    # (pixel handoffs travel through Redis).
    pool: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")] = "default"
    # Large outputs (hires stages) decode tile by tile to bound VAE memory.
    vae_tiling: bool = False
    # Keep weights in CPU memory and move each module to the GPU while it runs.
    cpu_offload: bool = False
    # A named kind of the architecture's weights, where it has some (Flux: dev embeds the
    # guidance scale, 28 steps; schnell takes no guidance, 1-4 steps). The worker checks the
    # weights agree.
    variant: str | None = None
    # torch.compile the denoiser when the model loads, for these (width, height) sizes (default:
    # the architecture's native size); other sizes run eagerly (workers/models/compiled.py).
    compile: bool = False
    compile_sizes: list[tuple[int, int]] = []
    # A full-precision denoiser quantized as it loads (workers/models/fp8.py): `fp8-storage` holds
    # each layer weight in fp8 with its own scale, computed in `dtype` (any device, about half of
    # bf16's memory); `fp8` computes in fp8 on tensor cores (torchao; CUDA compute capability
    # 8.9+, refused elsewhere).
    quantize: Literal["fp8-storage", "fp8"] | None = None

    @field_validator("pool")
    @classmethod
    def _not_the_webhook_queue(cls, pool: str) -> str:
        if pool == "webhooks":  # its queue would be the webhook queue (imagegen.webhooks)
            raise ValueError("pool 'webhooks' is the webhook queue's name; name the pool otherwise")
        return pool

    @model_validator(mode="after")
    def _quantized_eagerly(self) -> ModelEntry:
        if self.quantize == "fp8-storage" and self.compile:
            raise ValueError(
                f"{self.name!r}: quantize fp8-storage casts each layer's weight around its "
                "forward, which torch.compile's graphs cannot hold; drop compile, or use "
                "quantize fp8 (a GPU with fp8 tensor cores)"
            )
        return self

    @model_validator(mode="after")
    def _t5_where_the_architecture_has_one(self) -> ModelEntry:
        if isinstance(self.source, SingleFileSource) and self.source.t5 is not None:
            encoders = self.arch.text_encoders
            if "T5-XXL" not in encoders:
                raise ValueError(
                    f"{self.name!r} is {self.architecture}, whose text encoders are "
                    f"{', '.join(encoders)}: no T5; drop source.t5"
                )
        return self

    @model_validator(mode="after")
    def _variant_of_its_architecture(self) -> ModelEntry:
        arch = ARCHITECTURES[self.architecture]
        if self.variant is not None and arch.variant(self.variant) is None:
            known = ", ".join(v.name for v in arch.variants)
            raise ValueError(
                f"{self.name!r} is {self.architecture}, which has "
                + (f"the variants {known}, not {self.variant!r}" if known else "no variants")
            )
        return self

    @property
    def inpainting(self) -> bool:
        """An inpainting checkpoint: it runs only as a masked first stage."""
        variant = self.arch.variant(self.variant)
        return variant is not None and variant.inpainting

    @property
    def text_to_image(self) -> bool:
        return self.arch.text_to_image and not self.inpainting

    @property
    def default_steps(self) -> int:
        variant = self.arch.variant(self.variant)
        return self.arch.default_steps if variant is None else variant.default_steps

    @property
    def guidance_range(self) -> tuple[float, float]:
        variant = self.arch.variant(self.variant)
        if variant is not None and variant.guidance_range is not None:
            return variant.guidance_range
        return self.arch.guidance_range

    @property
    def default_guidance(self) -> float:
        variant = self.arch.variant(self.variant)
        return self.arch.default_guidance if variant is None else variant.default_guidance

    _known_architecture = field_validator("architecture")(known_architecture)

    @property
    def arch(self) -> Architecture:
        return ARCHITECTURES[self.architecture]

    @property
    def latent_space(self) -> LatentSpace:
        return self.arch.latent_space


class LoraEntry(_Strict):
    """A LoRA file, trained for one architecture: it may only adapt models of that one."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    architecture: str
    file: Path
    # "header": read from the file's keys (and equal to the registry's, where it names one);
    # "registry": as written there (the file was not readable where the registry was loaded).
    architecture_from: Literal["header", "registry"] = "registry"

    _known_architecture = field_validator("architecture")(known_architecture)


class VaeEntry(_Strict):
    """A VAE of one latent space: it may decode (and encode) only for models of that space."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    latent_space: LatentSpaceName
    # A .safetensors file (LDM or diffusers layout), or a diffusers folder.
    file: Path
    # "header": a diffusers folder's config says it; "registry": as written there (a file's
    # weights do not tell SD1.5's VAE from SDXL's), its channels checked where it was readable.
    latent_space_from: Literal["header", "registry"] = "registry"
    channels_checked: bool = False


class EmbeddingEntry(_Strict):
    """A textual-inversion embedding, trained for one architecture: named in a prompt, it may
    only go to models of that one."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    architecture: str
    file: Path
    # "header": read from the file's layout (and equal to the registry's, where it names one);
    # "registry": as written there (a pickle, or a file not readable where the registry loads).
    architecture_from: Literal["header", "registry"] = "registry"
    vectors: int | None = None  # token positions it takes, where its header says
    width: int | None = None  # its (first) vectors' width, where its header says

    _known_architecture = field_validator("architecture")(known_architecture)

    @field_validator("architecture")
    @classmethod
    def _takes_embeddings(cls, value: str) -> str:
        if ARCHITECTURES[value].embedding_keys is None:
            takes = [a.name for a in ARCHITECTURES.values() if a.embedding_keys is not None]
            raise ValueError(f"{value} prompts take no embeddings; those of {', '.join(takes)} do")
        return value


class ControlNetEntry(_Strict):
    """A ControlNet, made for one architecture: it may only steer models of that one."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    architecture: str
    # A .safetensors file (diffusers' or LDM's layout), or a diffusers folder.
    file: Path
    # "header": read from the file's keys or the folder's config (and equal to the registry's,
    # where it names one); "registry": as written there.
    architecture_from: Literal["header", "registry"] = "registry"

    _known_architecture = field_validator("architecture")(known_architecture)

    _served = field_validator("architecture")(served_only("ControlNets", controlnets_of))


class IpAdapterEntry(_Strict):
    """An IP-Adapter, made for one architecture: it may only steer models of that one; with the
    CLIP image encoder it reads its pictures with."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    architecture: str
    file: Path  # a .safetensors file (h94's, diffusers' layout)
    # A transformers CLIPVisionModelWithProjection folder (config.json and weights).
    image_encoder: Path
    # "header": read from the file's keys (and equal to the registry's, where it names one);
    # "registry": as written there.
    architecture_from: Literal["header", "registry"] = "registry"

    _known_architecture = field_validator("architecture")(known_architecture)

    _served = field_validator("architecture")(served_only("IP-Adapters", ip_adapters_of))


class UpscalerEntry(_Strict):
    """An upscaler model file (ESRGAN, Real-ESRGAN, SwinIR, … : whatever spandrel recognizes;
    the worker reads its architecture and scale from the weights)."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    file: Path
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    # Which workers run the upscale jobs that name it (a hires stage runs it on its own
    # model's); default: the registry's upscale pool (ModelRegistry.upscale_pool).
    pool: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")] = None

    @field_validator("name")
    @classmethod
    def _not_a_resampler(cls, name: str) -> str:
        if name in set(Upscaler):
            raise ValueError(f"{name!r} is a built-in upscaler's name; name the file otherwise")
        return name


class Preset(_Strict):
    """A named chain of stages: what a job's only stage naming it runs."""

    name: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
    description: str | None = None
    stages: Annotated[list[Stage], Field(min_length=1, max_length=MAX_STAGES)]


class ModelRegistry(_Strict):
    models: dict[str, ModelEntry]
    loras: dict[str, LoraEntry] = {}
    upscalers: dict[str, UpscalerEntry] = {}
    vaes: dict[str, VaeEntry] = {}
    embeddings: dict[str, EmbeddingEntry] = {}
    controlnets: dict[str, ControlNetEntry] = {}
    ip_adapters: dict[str, IpAdapterEntry] = {}
    presets: dict[str, Preset] = {}
    # The checkpoint of A1111 requests that name none (and of `GET /sdapi/v1/options`); unset,
    # the first text-to-image model in the file's order.
    a1111_default_checkpoint: str | None = None

    @model_validator(mode="after")
    def _a1111_default_draws_from_text(self) -> ModelRegistry:
        name = self.a1111_default_checkpoint
        if name is None:
            return self
        entry = self.models.get(name)
        if entry is None:
            why = "is not a registered model"
        elif not entry.text_to_image:
            why = f"is {entry.architecture}, which does not draw from text"
        else:
            return self
        drawing = [n for n, e in self.models.items() if e.text_to_image]
        raise ValueError(
            f"a1111_default_checkpoint: {name!r} {why}; name a text-to-image model of this "
            f"registry ({', '.join(drawing) or 'it has none'})"
        )

    @model_validator(mode="after")
    def _upscalers_on_served_pools(self) -> ModelRegistry:
        # Workers serve the pools models are on: an upscaler's jobs elsewhere would wait forever.
        pools = {entry.pool for entry in self.models.values()}
        for name, entry in self.upscalers.items():
            if entry.pool is not None and entry.pool not in pools:
                raise ValueError(
                    f"upscaler {name!r} has pool {entry.pool!r}, where no model is, so no "
                    f"worker serves it; use one of {', '.join(sorted(pools))}"
                )
        return self

    @model_validator(mode="after")
    def _presets_are_not_models(self) -> ModelRegistry:
        clash = sorted(set(self.presets) & set(self.models))
        if clash:
            raise ValueError(f"presets {clash} have the names of models; name them otherwise")
        for name, preset in self.presets.items():
            nested = [s.model for s in preset.stages if s.model in self.presets]
            if nested:
                raise ValueError(
                    f"preset {name!r} names the preset {nested[0]!r}: a preset's stages name "
                    "models; write that preset's stages out"
                )
        return self

    @property
    def a1111_checkpoint(self) -> str | None:
        """The checkpoint of A1111 requests that name none: `a1111_default_checkpoint`, else the
        first text-to-image model as the file lists them (None if no model draws from text)."""
        if self.a1111_default_checkpoint is not None:
            return self.a1111_default_checkpoint
        return next((n for n, e in self.models.items() if e.text_to_image), None)

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        for section in ("models", "presets", *_FILE_SECTIONS):
            if isinstance(data.get(section), dict):
                data = {
                    **data,
                    section: {
                        name: {"name": name, **entry} if isinstance(entry, dict) else entry
                        for name, entry in data[section].items()
                    },
                }
        return data

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def names(self) -> list[str]:
        return sorted(self.models)

    def pool(self, pool: str) -> list[str]:
        return sorted(name for name, entry in self.models.items() if entry.pool == pool)

    def upscale_pool(self, upscaler: str) -> str:
        """The pool whose workers run an upscale job with `upscaler` (a resampler or an upscaler
        model): the model's own `pool`, else `default` where models are served there, else the
        first pool by name (one some worker serves)."""
        entry = self.upscalers.get(upscaler)
        if entry is not None and entry.pool is not None:
            return entry.pool
        pools = self.pools()
        return "default" if "default" in pools or not pools else pools[0]

    def pools(self) -> list[str]:
        return sorted({entry.pool for entry in self.models.values()})

    @classmethod
    def load(cls, path: Path) -> ModelRegistry:
        raw = yaml.safe_load(path.read_text()) or {}
        if isinstance(raw, dict):
            readers = (
                _with_lora_files, _with_vae_files, _with_embedding_files, _with_controlnets,
                _with_ip_adapters,
            )  # fmt: skip
            for read_files in readers:
                raw = read_files(raw, path.parent)
        # Its presets are checked by the job rules (contract.job_rules.load_registry).
        return cls.model_validate(raw)._resolve_paths(path.parent)

    def _resolve_paths(self, base: Path) -> ModelRegistry:
        def resolve(p: Path) -> Path:
            return _resolve(p, base)

        resolved = {}
        for name, entry in self.models.items():
            source = entry.source
            if isinstance(source, FolderSource):
                source = FolderSource(folder=resolve(source.folder))
            elif isinstance(source, SingleFileSource):
                t5 = None if source.t5 is None else resolve(source.t5)
                source = SingleFileSource(
                    single_file=resolve(source.single_file), config=resolve(source.config), t5=t5
                )
            resolved[name] = entry.model_copy(update={"source": source})
        # Every other section names one file (or folder) per entry.
        files = {
            section: {
                name: entry.model_copy(update={"file": resolve(entry.file)})
                for name, entry in getattr(self, section).items()
            }
            for section in _FILE_SECTIONS
        }
        files["ip_adapters"] = {
            name: entry.model_copy(update={"image_encoder": resolve(entry.image_encoder)})
            for name, entry in files["ip_adapters"].items()
        }
        # A copy, so that every other section of the registry carries over as it is.
        return self.model_copy(update={"models": resolved, **files})


# The sections whose entries each name one file (or folder).
_FILE_SECTIONS = ("loras", "upscalers", "vaes", "embeddings", "controlnets", "ip_adapters")


def _resolve(path: Path | str, base: Path) -> Path:
    p = Path(os.path.expandvars(str(path))).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _with_lora_files(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The raw registry with every LoRA's architecture read from its file where readable (and
    checked against the one written, if any), and the files of `lora_folders` added."""
    loras: dict[str, Any] = {}
    for folder in raw.get("lora_folders") or []:
        loras.update(discover_loras(_resolve(folder, base)))
    for name, entry in (raw.get("loras") or {}).items():
        if not isinstance(entry, dict) or "file" not in entry:
            loras[name] = entry  # validation says what is wrong with it
            continue
        file = _resolve(entry["file"], base)
        declared = entry.get("architecture")
        probed = probe_lora(file) if file.is_file() else None
        if probed is None and declared is None:
            why = "does not show it in its keys" if file.is_file() else "cannot be read here"
            raise ValueError(f"LoRA {name!r}: {file} {why}; write its architecture in the registry")
        if probed is not None and declared in ARCHITECTURES and not fits_declared(probed, declared):
            raise ValueError(
                f"LoRA {name!r}: the registry says {declared}, but {file.name}'s keys are "
                f"those of a {probed} LoRA; fix the entry's architecture"
            )
        # A declared architecture the keys allow but do not show (fits_declared) is the
        # registry's word.
        from_header = probed is not None and (declared is None or probed == declared)
        loras[name] = {
            **entry,
            "architecture": probed if from_header else declared,
            "architecture_from": "header" if from_header else "registry",
        }
    return {k: v for k, v in raw.items() if k != "lora_folders"} | {"loras": loras}


def _with_vae_files(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The raw registry with every VAE's latent space checked against its file where readable
    (its channels; a folder's config names the space itself), and the files of `vae_folders`
    added (one that does not fit is left out, with a warning)."""
    vaes: dict[str, Any] = {}
    for item in raw.get("vae_folders") or []:
        folder, declared = (item, None) if not isinstance(item, dict) else (
            item.get("folder"), item.get("latent_space")
        )  # fmt: skip
        if folder is None:
            raise ValueError("vae_folders: each item is a folder, or {folder, latent_space}")
        for path in sorted(_resolve(folder, base).iterdir()):
            if not (path.suffix == ".safetensors" or (path / "config.json").is_file()):
                continue
            name = path.stem if path.is_file() else path.name
            try:
                vaes[name] = _vae_entry(name, {"file": path, "latent_space": declared}, base)
            except ValueError as unfit:
                log.warning("VAE %s left out: %s", path, unfit)
    for name, entry in (raw.get("vaes") or {}).items():
        folder = entry.get("folder") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and folder is not None and "file" not in entry:
            entry = {k: v for k, v in entry.items() if k != "folder"} | {"file": folder}
        vaes[name] = _vae_entry(name, entry, base) if isinstance(entry, dict) else entry
    return {k: v for k, v in raw.items() if k != "vae_folders"} | ({"vaes": vaes} if vaes else {})


def _vae_entry(name: str, entry: dict[str, Any], base: Path) -> dict[str, Any]:
    """One VAE entry with its latent space settled: as written, checked against the file."""
    if "file" not in entry:
        return entry  # validation says what is missing
    file = _resolve(entry["file"], base)
    declared = entry.get("latent_space")
    if declared is not None and declared not in LATENT_SPACES:
        return entry  # validation lists the latent spaces
    probed = probe_vae(file) if file.exists() else None
    if file.exists() and probed is None:
        why = (
            "holds no VAE decoder (no decoder.conv_in.weight)"
            if file.is_dir() or file.suffix == ".safetensors"
            else "is not a safetensors file or a diffusers folder; convert it to safetensors"
        )
        raise ValueError(f"VAE {name!r}: {file} {why}")
    if probed is None:
        if declared is None:
            raise ValueError(f"VAE {name!r}: {file} cannot be read here; write its latent_space")
        return {**entry, "latent_space_from": "registry", "channels_checked": False}
    space = declared or probed.latent_space
    fits = [s.name for s in LATENT_SPACES.values() if s.channels == probed.channels]
    if space is None:
        raise ValueError(
            f"VAE {name!r}: {file.name} decodes {probed.channels}-channel latents, which "
            f"{' and '.join(fits) or 'no latent space here'} have; write its latent_space"
        )
    if probed.latent_space is not None and probed.latent_space != space:
        raise ValueError(
            f"VAE {name!r}: the registry says {space}, but {file.name}'s config is that of a "
            f"{probed.latent_space} VAE; fix the entry's latent_space"
        )
    if LATENT_SPACES[space].channels != probed.channels:
        raise ValueError(
            f"VAE {name!r}: the registry says {space} ({LATENT_SPACES[space].channels} "
            f"channels), but {file.name} decodes {probed.channels}-channel latents (a VAE of "
            f"{' or '.join(fits) or 'no latent space here'}); fix the entry's latent_space"
        )
    from_header = probed.latent_space is not None
    return {
        **entry,
        "file": file,
        "latent_space": space,
        "latent_space_from": "header" if from_header else "registry",
        "channels_checked": True,
    }


def _with_embedding_files(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The raw registry with every embedding's architecture read from its header where readable
    (and checked against the one written, if any), and the files of `embedding_folders` added."""
    embeddings: dict[str, Any] = {}
    for folder in raw.get("embedding_folders") or []:
        embeddings.update(discover_embeddings(_resolve(folder, base)))
    for name, entry in (raw.get("embeddings") or {}).items():
        if not isinstance(entry, dict) or "file" not in entry:
            embeddings[name] = entry  # validation says what is wrong with it
            continue
        file = _resolve(entry["file"], base)
        declared = entry.get("architecture")
        readable = file.is_file() and file.suffix == ".safetensors"
        probed = probe_embedding(file) if readable else None
        if readable and probed is None:
            raise ValueError(f"embedding {name!r}: {file} holds no embedding vectors")
        shown = None if probed is None else probed.architecture
        if shown is None and declared is None:
            why = (
                "does not show it in its layout"
                if readable
                else "is a pickle, which is not opened here"
                if file.is_file()
                else "cannot be read here"
            )
            raise ValueError(
                f"embedding {name!r}: {file} {why}; write its architecture in the registry"
            )
        if shown is not None and declared is not None and shown != declared:
            raise ValueError(
                f"embedding {name!r}: the registry says {declared}, but {file.name} holds the "
                f"vectors of a {shown} embedding; fix the entry's architecture"
            )
        embeddings[name] = {
            **entry,
            "architecture": shown or declared,
            "architecture_from": "header" if shown is not None else "registry",
            "vectors": None if probed is None else probed.vectors,
            "width": None if probed is None else probed.width,
        }
    rest = {k: v for k, v in raw.items() if k != "embedding_folders"}
    return rest | ({"embeddings": embeddings} if embeddings else {})


def _with_controlnets(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The raw registry with every ControlNet's architecture read from its header or config
    where readable (and checked against the one written, if any), and the ControlNets of
    `controlnet_folders` added."""
    controlnets: dict[str, Any] = {}
    for folder in raw.get("controlnet_folders") or []:
        controlnets.update(discover_controlnets(_resolve(folder, base)))
    for name, entry in (raw.get("controlnets") or {}).items():
        if not isinstance(entry, dict) or "file" not in entry:
            controlnets[name] = entry  # validation says what is wrong with it
            continue
        file = _resolve(entry["file"], base)
        declared = entry.get("architecture")
        holds, shown = probe_controlnet(file)
        if file.exists() and not holds:
            raise ValueError(
                f"ControlNet {name!r}: {file} holds no ControlNet (no conditioning embedder in "
                "its keys or config)"
            )
        if shown is None and declared is None:
            why = "does not show it" if file.exists() else "cannot be read here"
            raise ValueError(
                f"ControlNet {name!r}: {file} {why}; write its architecture in the registry"
            )
        if shown is not None and declared is not None and shown != declared:
            raise ValueError(
                f"ControlNet {name!r}: the registry says {declared}, but {file.name} is a "
                f"{shown} ControlNet (its {'config' if file.is_dir() else 'keys'} say so); fix "
                "the entry's architecture"
            )
        controlnets[name] = {
            **entry,
            "architecture": shown or declared,
            "architecture_from": "header" if shown is not None else "registry",
        }
    rest = {k: v for k, v in raw.items() if k != "controlnet_folders"}
    return rest | ({"controlnets": controlnets} if controlnets else {})


def _with_ip_adapters(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The raw registry with every IP-Adapter's architecture read from its header where
    readable (and checked against the one written, if any), its image encoder defaulted to
    the `image_encoder/` beside it and checked against the width the adapter takes, and the
    IP-Adapters of `ip_adapter_folders` added."""
    adapters: dict[str, Any] = {}
    for folder in raw.get("ip_adapter_folders") or []:
        adapters.update(discover_ip_adapters(_resolve(folder, base)))
    discovered = set(adapters)
    adapters.update(raw.get("ip_adapters") or {})
    written = set(raw.get("ip_adapters") or {})
    for name, entry in list(adapters.items()):
        if not isinstance(entry, dict) or "file" not in entry:
            continue  # validation says what is wrong with it
        try:
            adapters[name] = settled = _ip_adapter_entry(name, entry, base)
            if name not in written:  # checked here to leave it out; a written one, by validation
                served_only("IP-Adapters", ip_adapters_of)(settled["architecture"])
        except ValueError as misfit:
            if name in written or name not in discovered:
                raise
            # A folder's file that does not fit is left out, as a folder's unreadable ones are.
            log.warning("IP-Adapter %s left out: %s", entry["file"], misfit)
            del adapters[name]
    rest = {k: v for k, v in raw.items() if k != "ip_adapter_folders"}
    return rest | ({"ip_adapters": adapters} if adapters else {})


def _ip_adapter_entry(name: str, entry: dict[str, Any], base: Path) -> dict[str, Any]:
    """An IP-Adapter's raw entry with its architecture and image encoder settled; ValueError
    where its file contradicts them."""
    file = _resolve(entry["file"], base)
    declared = entry.get("architecture")
    probed = probe_ip_adapter(file)
    if file.exists() and probed is None:
        raise ValueError(
            f"IP-Adapter {name!r}: {file} holds no IP-Adapter (no to_k_ip keys in its "
            "header; a .bin pickle is not read: convert it to .safetensors)"
        )
    shown = None if probed is None else probed.architecture
    if shown is None and declared is None:
        why = "does not show it" if file.exists() else "cannot be read here"
        raise ValueError(
            f"IP-Adapter {name!r}: {file} {why}; write its architecture in the registry"
        )
    if shown is not None and declared is not None and shown != declared:
        raise ValueError(
            f"IP-Adapter {name!r}: the registry says {declared}, but {file.name} is a "
            f"{shown} IP-Adapter (its keys say so); fix the entry's architecture"
        )
    encoder = _resolve(entry.get("image_encoder") or file.parent / IMAGE_ENCODER_FOLDER, base)
    if probed is not None and probed.image_width is not None and probed.image_output:
        width = encoder_width(encoder, probed.image_output)
        if width is not None and width != probed.image_width:
            raise ValueError(
                f"IP-Adapter {name!r}: {file.name} takes a {probed.image_width}-wide image "
                f"embedding, but the image encoder {encoder} gives {width}; name the encoder "
                "it was trained with (image_encoder: …)"
            )
    return {
        **entry,
        "image_encoder": encoder,
        "architecture": shown or declared,
        "architecture_from": "header" if shown is not None else "registry",
    }
