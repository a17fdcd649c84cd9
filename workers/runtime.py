"""The models a worker keeps loaded between jobs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline

from contract.registry import ModelEntry, ModelRegistry
from workers.pipelines import image_pipeline_of, load_text_pipeline, resolve_device, resolve_dtype

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
    last_used: float = field(default_factory=time.monotonic)
    _image: DiffusionPipeline | None = None

    @property
    def image(self) -> DiffusionPipeline:
        """The img2img pipeline; shares every module with `text` (built on first use)."""
        if self._image is None:
            self._image = image_pipeline_of(self.entry, self.text)
        return self._image


def _param_bytes(pipe: DiffusionPipeline) -> int:
    seen: set[int] = set()
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in (*component.parameters(), *component.buffers()):
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    """Loads models on first use and keeps them resident."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._loaded: dict[str, LoadedModel] = {}
        self.loads = 0  # how many times weights were read from disk (a benchmark figure)

    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    def get(self, name: str) -> LoadedModel:
        model = self._loaded.get(name)
        if model is None:
            model = self._load(name)
            self._loaded[name] = model
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
            pipe = load_text_pipeline(entry, device, dtype, shared={})
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            log.exception("loading %s failed", name)
            raise ModelUnavailable(
                f"model {name!r} could not be loaded on this worker ({type(exc).__name__}: "
                f"{first_line(exc)}); check its files and registry entry"
            ) from exc
        seconds = time.perf_counter() - started
        self.loads += 1
        model = LoadedModel(entry, device, dtype, pipe, _param_bytes(pipe), seconds)
        log.info(
            "loaded %s (%s, %s, %.1f MiB) in %.2f s",
            name,
            device,
            dtype,
            model.param_bytes / 2**20,
            seconds,
        )
        return model


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:limit]
