"""The models a worker keeps loaded between jobs, under a memory budget.

Each model is loaded once and kept; its txt2img and img2img pipelines share every module. Identical
components of different models (same weights, device and dtype) are loaded once and shared: the
SDXL refiner takes the base's VAE and text_encoder_2. When a memory budget is set, loading a model
first evicts the least recently used models that the running job does not need.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from contract.registry import FolderSource, ModelEntry, ModelRegistry, SingleFileSource
from contract.safetensors_header import SAFETENSORS_SUFFIXES, read_header
from contract.vae_files import weights_file
from jobs.disclosure import without_host_paths
from jobs.presence import ComponentHolding
from workers.families import ArchitectureMismatch, pipelines_for
from workers.families.gguf_files import is_gguf, storage_of, stored_bytes
from workers.models.attention import log_first_call, watch_first_call
from workers.models.checkpoint_probe import bundled_components, diagnose, is_scaled_fp8
from workers.models.compiled import CompiledDenoiser, compile_denoiser
from workers.models.controlnets import LoadedControlNet, load_controlnet
from workers.models.embeddings import LoadedEmbedding, read_embedding
from workers.models.fp8 import QuantizeRefused, adapters_made_in_compute_dtype, fp8_storage
from workers.models.ip_adapters import LoadedIpAdapter, load_ip_adapter
from workers.models.loading import (
    image_pipeline_of,
    inpaint_pipeline_of,
    load_text_pipeline,
    resolve_device,
    resolve_dtype,
)
from workers.models.t5_files import t5_bytes, t5_component
from workers.models.upscalers import LoadedUpscaler, load_upscaler
from workers.models.vaes import LoadedVae, load_vae
from workers.models.weights import SHAREABLE, estimated_bytes, fingerprint, weight_files

log = logging.getLogger("imagegen.worker")


class ModelUnavailable(Exception):
    """The model is not registered, or its weights could not be loaded."""


@dataclass
class LoadedModel:
    entry: ModelEntry
    device: str
    dtype: torch.dtype
    text: DiffusionPipeline
    param_bytes: int
    load_seconds: float
    fingerprints: dict[str, str] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)  # components taken from other models
    # LoRAs loaded into its modules (PEFT adapters), each with when a stage last used it
    adapters: dict[str, float] = field(default_factory=dict)
    # Called after an adapter grew the model: the cache recounts and makes room (ModelCache).
    on_adapter_loaded: Callable[[LoadedModel, set[str]], None] | None = None
    last_used: float = field(default_factory=time.monotonic)
    compiled: CompiledDenoiser | None = None  # registry `compile: true`
    held: dict[str, ComponentHeld] = field(default_factory=dict)  # as loaded (before LoRAs)
    _image: DiffusionPipeline | None = None
    _inpaint: DiffusionPipeline | None = None

    def use_adapter(self, name: str, file: Path, keep: set[str]) -> None:
        """Load the LoRA `name` into the model's modules unless it is there; `keep` are the
        adapters the running stage needs, which the memory budget never deletes."""
        if name not in self.adapters:
            denoiser = pipelines_for(self.entry.architecture).denoiser_of(self.text)
            with adapters_made_in_compute_dtype(denoiser):
                self.text.load_lora_weights(str(file), adapter_name=name)
            if self.on_adapter_loaded is not None:
                self.on_adapter_loaded(self, keep)
        self.adapters[name] = time.monotonic()

    def delete_adapter(self, name: str) -> None:
        self.text.delete_adapters(name)
        del self.adapters[name]

    @property
    def image(self) -> DiffusionPipeline:
        """The img2img pipeline; shares every module with `text` (built on first use)."""
        if self._image is None:
            self._image = image_pipeline_of(self.entry, self.text)
        return self._image

    @property
    def pipelines(self) -> list[DiffusionPipeline]:
        """Its pipelines, for what a stage lends them all (a VAE, embeddings, an IP-Adapter):
        each built here if it was not, so that none made during the loan keeps what was lent."""
        inpaint = [self.inpaint] if pipelines_for(self.entry.architecture).inpaint else []
        return [self.text, self.image, *inpaint]

    @property
    def inpaint(self) -> DiffusionPipeline:
        """The inpainting pipeline; shares every module with `text` (built on first use)."""
        if self._inpaint is None:
            self._inpaint = inpaint_pipeline_of(self.entry, self.text)
        return self._inpaint


@dataclass(frozen=True)
class ComponentHeld:
    """What one component of a loaded model holds: its weights' storage (dtypes, or a GGUF
    file's quantization: Q8_0) and their bytes."""

    storage: list[str]
    nbytes: int


def components_held(pipe: DiffusionPipeline) -> dict[str, ComponentHeld]:
    """Each module component's storage and bytes, for the load log and GET /models: what a model
    really computes from (two storages where fp8 or quantized weights sit beside the model's
    dtype: `workers.models.fp8`, `workers.families.gguf_files`)."""
    held = {}
    for name, component in sorted(pipe.components.items()):
        if isinstance(component, torch.nn.Module):
            params = list(component.parameters())
            if params:
                held[name] = ComponentHeld(
                    sorted({storage_of(p) for p in params}), sum(p.nbytes for p in params)
                )
    return held


def _tensors(pipe: DiffusionPipeline) -> Iterable[torch.Tensor]:
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for param in component.parameters():
                yield param
                yield from _four_bit_state(param)
            yield from component.buffers()


def _four_bit_state(param: torch.Tensor) -> Iterable[torch.Tensor]:
    """A bitsandbytes 4-bit weight's block scales and their own (beside it, not parameters)."""
    state = getattr(param, "quant_state", None)
    while state is not None:
        yield from (t for t in (state.absmax, state.code) if isinstance(t, torch.Tensor))
        state = getattr(state, "state2", None)


def resident_bytes(pipes: Iterable[DiffusionPipeline]) -> int:
    """Bytes of all distinct tensors the pipelines hold (a shared module counts once)."""
    seen: set[int] = set()
    total = 0
    for pipe in pipes:
        for tensor in _tensors(pipe):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    def __init__(self, registry: ModelRegistry, budget_bytes: int | None = None) -> None:
        self.registry = registry
        self.budget_bytes = budget_bytes
        self._loaded: dict[str, LoadedModel] = {}
        self.pinned: frozenset[str] = frozenset()  # models the running job needs
        self._resident = 0  # recounted on every load and eviction, read by the heartbeat
        self.loads = 0  # weights read from disk (a benchmark figure: 0 reloads when warm)
        self.unavailable: dict[str, str] = {}  # model -> why its last load failed
        self.evictions = 0
        self._upscalers: dict[str, LoadedUpscaler] = {}
        # Registered VAEs, per (name, device, dtype): one file serves every model of its space.
        self._vaes: dict[str, LoadedVae] = {}
        self._embeddings: dict[str, LoadedEmbedding] = {}  # their vectors, read once
        # Registered ControlNets, per (name, device, dtype): shared by the models of their kind.
        self._controlnets: dict[str, LoadedControlNet] = {}
        # Registered IP-Adapters, per (name, model, device, dtype): built for that model's UNet.
        self._ip_adapters: dict[str, LoadedIpAdapter] = {}

    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    def resident_bytes(self) -> int:
        return self._resident

    def holdings(self) -> dict[str, dict[str, ComponentHolding]]:
        """What each loaded model's components hold, as loaded: for GET /models."""
        return {
            name: {
                component: ComponentHolding(storage=held.storage, mib=round(held.nbytes / 2**20, 3))
                for component, held in model.held.items()
            }
            for name, model in sorted(self._loaded.items())
        }

    def _recount(self) -> None:
        self._resident = (
            resident_bytes(m.text for m in self._loaded.values())
            + sum(u.param_bytes for u in self._upscalers.values())
            + sum(v.param_bytes for v in self._vaes.values())
            + sum(e.nbytes for e in self._embeddings.values())
            + sum(c.param_bytes for c in self._controlnets.values())
            + sum(a.param_bytes for a in self._ip_adapters.values())
        )

    def controlnet(self, name: str, model: LoadedModel, keep: set[str]) -> LoadedControlNet:
        """A registered ControlNet on `model`'s device and dtype: loaded once and kept under the
        same memory budget (least recently used first, never `keep`, the ControlNets the running
        stage needs). The caller has checked it is of `model`'s architecture."""
        key = _on(name, model)
        loaded = self._controlnets.get(key)
        if loaded is None:
            entry = self.registry.controlnets.get(name)
            if entry is None:
                raise ModelUnavailable(f"ControlNet {name!r} is not in this worker's registry")
            denoiser = pipelines_for(model.entry.architecture).denoiser_of(model.text)
            with _unavailable_if_it_fails("ControlNet", name, entry.file):
                if self.budget_bytes is not None:
                    files = weight_files(entry.file) if entry.file.is_dir() else [entry.file]
                    spared = {model.entry.name, *(_on(n, model) for n in keep)}
                    self._make_room(estimated_bytes(files, model.dtype), keep=spared,
                                    adapters_kept=_adapters_of(model))  # fmt: skip
                loaded = load_controlnet(entry, denoiser, model.device, model.dtype)
            self._controlnets[key] = loaded
            self._recount()
            log.info("loaded ControlNet %s (%.1f MiB)", name, loaded.param_bytes / 2**20)
        loaded.last_used = time.monotonic()
        return loaded

    def ip_adapter(self, name: str, model: LoadedModel) -> LoadedIpAdapter:
        """A registered IP-Adapter built for `model`'s UNet, on its device and dtype: loaded once
        (with its image encoder) and kept under the same memory budget (least recently used
        first, never the one asked for now). The caller has checked it is of `model`'s
        architecture."""
        key = _on(f"{name}@{model.entry.name}", model)
        loaded = self._ip_adapters.get(key)
        if loaded is None:
            entry = self.registry.ip_adapters.get(name)
            if entry is None:
                raise ModelUnavailable(f"IP-Adapter {name!r} is not in this worker's registry")
            denoiser = pipelines_for(model.entry.architecture).denoiser_of(model.text)
            with _unavailable_if_it_fails("IP-Adapter", name, entry.file):
                if self.budget_bytes is not None:
                    files = [entry.file, *weight_files(entry.image_encoder)]
                    self._make_room(estimated_bytes(files, model.dtype), keep={model.entry.name},
                                    adapters_kept=_adapters_of(model))  # fmt: skip
                loaded = load_ip_adapter(entry, denoiser, model.device, model.dtype)
            self._ip_adapters[key] = loaded
            self._recount()
            log.info("loaded IP-Adapter %s (%.1f MiB)", name, loaded.param_bytes / 2**20)
        loaded.last_used = time.monotonic()
        return loaded

    def embedding(self, name: str) -> LoadedEmbedding:
        """A registered embedding's vectors, read once (a few KB: the budget counts them, and
        evicts them as it does the rest)."""
        loaded = self._embeddings.get(name)
        if loaded is None:
            entry = self.registry.embeddings.get(name)
            if entry is None:
                raise ModelUnavailable(f"embedding {name!r} is not in this worker's registry")
            with _unavailable_if_it_fails("embedding", name, entry.file):
                loaded = read_embedding(entry)
            self._embeddings[name] = loaded
            self._recount()
        loaded.last_used = time.monotonic()
        return loaded

    def vae(self, name: str, model: LoadedModel) -> LoadedVae:
        """A registered VAE on `model`'s device and dtype, shaped as its own VAE: loaded once and
        kept under the same memory budget (least recently used first, never the one asked for
        now). The caller has checked the VAE's latent space is the model's (contract.vaes)."""
        key = _on(name, model)
        loaded = self._vaes.get(key)
        if loaded is None:
            entry = self.registry.vaes.get(name)
            if entry is None:
                raise ModelUnavailable(f"VAE {name!r} is not in this worker's registry")
            with _unavailable_if_it_fails("VAE", name, entry.file):
                if self.budget_bytes is not None:
                    size = _file_bytes(weights_file(entry.file), model.dtype)
                    self._make_room(size, keep={model.entry.name})
                loaded = load_vae(entry, model.text.vae, model.device, model.dtype)
            self._vaes[key] = loaded
            self._recount()
            log.info(
                "loaded VAE %s (%s, %.1f MiB)", name, entry.latent_space, loaded.param_bytes / 2**20
            )
        loaded.last_used = time.monotonic()
        return loaded

    def upscaler(self, name: str) -> LoadedUpscaler:
        """A registered upscaler model, loaded once and kept under the same memory budget."""
        loaded = self._upscalers.get(name)
        if loaded is None:
            entry = self.registry.upscalers.get(name)
            if entry is None:
                raise ModelUnavailable(f"upscaler {name!r} is not in this worker's registry")
            try:
                if self.budget_bytes is not None:
                    self._make_room(_file_bytes(entry.file), keep={name})
                loaded = load_upscaler(entry, resolve_device(entry.device))
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # a bad file fails the jobs that use it, not the worker
                log.exception("loading upscaler %s failed", name)
                found = diagnose(entry.file)
                reason = found or f"{type(exc).__name__}: {first_line(exc)} (from {entry.file})"
                raise ModelUnavailable(f"upscaler {name!r} could not be loaded: {reason}") from exc
            self._upscalers[name] = loaded
            self._recount()
            log.info(
                "loaded upscaler %s (%s, %dx, %.1f MiB)",
                name,
                loaded.architecture,
                loaded.scale,
                loaded.param_bytes / 2**20,
            )
        loaded.last_used = time.monotonic()
        return loaded

    def get(self, name: str) -> LoadedModel:
        model = self._loaded.get(name)
        if model is None:
            model = self._load(name)
        model.last_used = time.monotonic()
        return model

    def _load(self, name: str) -> LoadedModel:
        entry = self.registry.get(name)
        if entry is None:
            raise ModelUnavailable(f"model {name!r} is not in this worker's registry")
        device = resolve_device(entry.device)
        dtype = resolve_dtype(entry.dtype, device)
        started = time.perf_counter()
        try:
            prints, shared = self._shareable(entry, device, dtype)
            if self.budget_bytes is not None:
                self._make_room(self._estimate(entry, dtype, set(shared)), keep={name})
            pipe = load_text_pipeline(entry, device, dtype, shared=shared)
            compiled = compile_denoiser(entry, pipe) if entry.compile else None
        except torch.OutOfMemoryError:
            raise  # not the model's fault: the job fails out_of_memory
        except Exception as exc:  # any loader error: the model is unavailable, the worker lives
            log.exception("loading %s failed", name)
            reason = _why_unloadable(entry, exc)
            self.unavailable[name] = reason
            raise ModelUnavailable(f"model {name!r} could not be loaded: {reason}") from exc
        self.unavailable.pop(name, None)
        seconds = time.perf_counter() - started
        self.loads += 1
        model = LoadedModel(
            entry, device, dtype, pipe, resident_bytes([pipe]), seconds, prints, sorted(shared)
        )
        model.on_adapter_loaded = self._adapter_loaded
        model.compiled = compiled
        model.held = components_held(pipe)
        self._loaded[name] = model
        self._recount()
        log.info(
            "loaded %s (%s, %s, %.1f MiB%s) in %.2f s",
            name,
            device,
            dtype,
            model.param_bytes / 2**20,
            f", sharing {', '.join(sorted(shared))}" if shared else "",
            seconds,
        )
        log.info(
            "%s holds %s", name,
            ", ".join(f"{c} in {'+'.join(h.storage)}" for c, h in model.held.items()),
        )  # fmt: skip
        wide = sorted(c for c, h in model.held.items() if "float32" in h.storage)
        if device != "cpu" and wide:
            log.warning(
                "%s computes in fp32 on %s (%s): several times slower than bf16 or fp16 on a "
                "GPU; set the entry's dtype (bf16)",
                name, device, ", ".join(wide),
            )  # fmt: skip
        if not entry.compile:  # a compiled denoiser's graphs would break under the observers
            denoiser = pipelines_for(entry.architecture).denoiser_of(pipe)
            watch_first_call(denoiser, log_first_call(name, device))
        self._make_room(0, keep={name})
        return model

    def _shareable(
        self, entry: ModelEntry, device: str, dtype: torch.dtype
    ) -> tuple[dict[str, str], dict[str, torch.nn.Module]]:
        """Fingerprints of the entry's components, and loaded modules with the same weights."""
        if not isinstance(entry.source, FolderSource):
            return {}, {}
        prints: dict[str, str] = {}
        shared: dict[str, torch.nn.Module] = {}
        for component in SHAREABLE:
            digest = fingerprint(entry.source.folder / component)
            if digest is None:
                continue
            prints[component] = digest
            for other in self._loaded.values():
                if (other.device, other.dtype) != (device, dtype):
                    continue
                for their_component, their_digest in other.fingerprints.items():
                    module = getattr(other.text, their_component, None)
                    if their_digest == digest and isinstance(module, torch.nn.Module):
                        shared[component] = module
        return prints, shared

    def _estimate(self, entry: ModelEntry, dtype: torch.dtype, skip: set[str]) -> int:
        source = entry.source
        denoiser = pipelines_for(entry.architecture).denoiser_folder
        quantized = entry.quantize == "fp8-storage"  # one byte a layer weight, once loaded
        if isinstance(source, FolderSource):
            folders = [p for p in source.folder.iterdir() if p.is_dir() and p.name not in skip]
            return sum(
                estimated_bytes(weight_files(d), dtype, quantized=quantized and d.name == denoiser)
                for d in folders
            )
        if isinstance(source, SingleFileSource):
            # The file, and what the config folder adds: every component it does not bundle
            # (about 10 GB of text encoders and VAE for a denoiser-only Flux file).
            taken = {denoiser, *bundled_components(source.single_file), *skip}
            t5 = 0
            if source.t5 is not None:  # read from its own file (workers.models.t5_files)
                taken.add(t5_component(source.config))
                t5 = t5_bytes(source.t5, dtype)
            added = (
                [p for p in source.config.iterdir() if p.is_dir() and p.name not in taken]
                if source.config.is_dir()
                else []
            )
            added_files = [f for d in added for f in weight_files(d)]
            added_bytes = estimated_bytes(added_files, dtype)
            if is_gguf(source.single_file):  # stays quantized (workers.families.gguf_files)
                return stored_bytes(source.single_file, dtype) + added_bytes + t5
            # A plain fp8 file stays fp8 (workers.models.fp8): one byte a weight; so does a
            # scaled one where its scales are read (workers.models.scaled_fp8).
            scaled = pipelines_for(entry.architecture).reads_scaled_fp8 and is_scaled_fp8(
                read_header(source.single_file) or {}
            )
            fp8 = fp8_storage(source.single_file) is not None or scaled
            kept = fp8 and not entry.compile
            return (
                estimated_bytes([source.single_file], dtype, fp8_kept=kept, quantized=quantized)
                + added_bytes
                + t5
            )
        return 0  # a hub model's size is known once loaded; room is made afterwards

    def _adapter_loaded(self, model: LoadedModel, keep: set[str]) -> None:
        """A LoRA grew `model` (its bytes are counted now); if that broke the budget, the least
        recently used of everything else goes, the running stage's adapters never."""
        self._recount()
        spared = frozenset((model.entry.name, name) for name in keep)
        self._make_room(0, keep={model.entry.name}, adapters_kept=spared)

    def _make_room(
        self, incoming: int, keep: set[str], adapters_kept: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        """Evict the least recently used models, upscalers, VAEs, embeddings, ControlNets,
        IP-Adapters and LoRA adapters (never those the running job needs) until `incoming` bytes
        fit in the budget."""
        if self.budget_bytes is None:
            return
        while self.resident_bytes() + incoming > self.budget_bytes:
            spared = self.pinned | keep
            evictable: list[tuple[float, str, str, str]] = [
                (m.last_used, "model", n, "") for n, m in self._loaded.items() if n not in spared
            ]
            evictable += [
                (u.last_used, "upscaler", n, "")
                for n, u in self._upscalers.items()
                if n not in spared
            ]
            evictable += [(v.last_used, "vae", k, "") for k, v in self._vaes.items()]
            evictable += [(e.last_used, "embedding", n, "") for n, e in self._embeddings.items()]
            evictable += [
                (c.last_used, "controlnet", k, "")
                for k, c in self._controlnets.items()
                if k not in spared
            ]
            evictable += [(a.last_used, "ip_adapter", k, "") for k, a in self._ip_adapters.items()]
            evictable += [
                (used, "adapter", n, adapter)
                for n, m in self._loaded.items()
                for adapter, used in m.adapters.items()
                if (n, adapter) not in adapters_kept
            ]
            if not evictable:
                log.warning(
                    "memory budget %.1f MiB exceeded by what the running job needs",
                    self.budget_bytes / 2**20,
                )
                return
            _, kind, victim, adapter = min(evictable)
            if kind == "model":
                self.evict(victim)
                continue
            if kind == "upscaler":
                del self._upscalers[victim]
            elif kind == "vae":
                del self._vaes[victim]
            elif kind == "embedding":
                del self._embeddings[victim]
            elif kind == "controlnet":
                del self._controlnets[victim]
            elif kind == "ip_adapter":
                del self._ip_adapters[victim]
            else:
                self._loaded[victim].delete_adapter(adapter)
            self._recount()
            log.info("evicting %s %s (least recently used)", kind, adapter or victim)
            self.evictions += 1

    def evict(self, name: str) -> None:
        model = self._loaded.pop(name)
        self._recount()
        log.info("evicting %s (least recently used)", name)
        self.evictions += 1
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _adapters_of(model: LoadedModel) -> frozenset[tuple[str, str]]:
    """The LoRA adapters on the model a component loads for: the running stage activated its
    own before its ControlNets and IP-Adapter load, so none of them may go to make room."""
    return frozenset((model.entry.name, adapter) for adapter in model.adapters)


def _on(name: str, model: LoadedModel) -> str:
    """The cache key of a component loaded for `model`: one copy per device and dtype."""
    return f"{name}/{model.device}/{model.dtype}"


@contextlib.contextmanager
def _unavailable_if_it_fails(kind: str, name: str, file: Path) -> Iterator[None]:
    """A component file that does not load fails the jobs that use it, not the worker: its error
    becomes ModelUnavailable, in words; running out of memory stays what it is."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        log.exception("loading %s %s failed", kind, name)
        why = f"{type(exc).__name__}: {first_line(exc)} (from {file})"
        raise ModelUnavailable(f"{kind} {name!r} could not be loaded: {why}") from exc


def _why_unloadable(entry: ModelEntry, exc: Exception) -> str:
    """The cause in a user's words: what the file is instead, where its header says so."""
    source = entry.source
    if isinstance(exc, ArchitectureMismatch):  # the loader's own words on the file
        return without_host_paths(str(exc))
    if isinstance(exc, QuantizeRefused):
        return f"quantize {entry.quantize}: {exc}"
    if isinstance(source, SingleFileSource):
        classes = pipelines_for(entry.architecture)
        found = diagnose(
            source.single_file, classes.reads_scaled_fp8, classes.reads_gguf, entry.inpainting,
            classes.reads_four_bit,
        )  # fmt: skip
        if found is not None:
            return found
        where = str(source.single_file)
    elif isinstance(source, FolderSource):
        where = str(source.folder)
    else:
        where = source.hub
    # Every key holder reads it (GET /models, the job's error): the file, not the host's folders.
    said = f"{type(exc).__name__}: {first_line(exc)} (from {where}); check its files and entry"
    return without_host_paths(said)


def _file_bytes(path: Path, dtype: torch.dtype = torch.float32) -> int:
    """A file's size once loaded: its tensors in `dtype` (spandrel loads upscalers in fp32), or
    the file's size for a pickle, whose header says nothing."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES and path.is_file():
        return estimated_bytes([path], dtype)
    return path.stat().st_size if path.is_file() else 0


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""
