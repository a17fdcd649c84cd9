from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import Field

from app.deps import RegistryDep, StoreDep
from app.errors import documented
from app.keys import CallerDep
from contract.architectures import ARCHITECTURES, ArchitectureName
from contract.envelope import Answer
from contract.latent_spaces import LatentSpaceName
from contract.resamplers import Upscaler
from contract.samplers import samplers_for, schedules_for
from contract.spec import Stage
from jobs.disclosure import public_worker_name
from jobs.presence import live_workers

router = APIRouter(tags=["models"], responses=documented(401, 503))


class LatentSpaceInfo(Answer):
    name: LatentSpaceName
    channels: int
    vae_downscale: int
    scaling_factor: float
    shift_factor: float | None
    packed_2x2: bool


class SamplerInfo(Answer):
    name: str = Field(description="As a stage's `sampler` (A1111's name).")
    schedules: list[str] = Field(description="The `scheduler` values it takes.")


class ComponentInfo(Answer):
    storage: list[str] = Field(
        description="How its weights are held: dtypes (float16, bfloat16, float8_e4m3fn), or "
        "a GGUF file's quantization (Q8_0, Q4_K); two where fp8 or quantized matrices sit "
        "beside norms and biases kept wider."
    )
    mib: float = Field(description="Its weights' size in memory, MiB.")


class ModelInfo(Answer):
    name: str
    architecture: ArchitectureName
    latent_space: LatentSpaceInfo
    size_multiple: int
    text_to_image: bool
    negative_prompt: bool
    guidance_range: tuple[float, float]
    default_steps: int
    variant: str | None = Field(
        description="The kind of its architecture's weights, where it has kinds (Flux: dev, "
        "guidance-distilled, schnell, 1-4 steps and no guidance, or fill, FLUX.1 Fill; SD1.5 "
        "and SDXL: inpainting, a 9-channel UNet). Inpainting kinds run only as a masked stage."
    )
    text_encoders: list[str] = Field(description="Its architecture's text encoders.")
    samplers: list[SamplerInfo] = Field(
        description="What a stage's `sampler` may name (default: the model's own scheduler)."
    )
    pool: str
    workers_serving: list[str] = Field(description="Live workers of this model's pool.")
    loaded_on: list[str] = Field(description="Live workers holding it in memory now.")
    held_on: dict[str, dict[str, ComponentInfo]] = Field(
        description="What each worker in `loaded_on` holds of it, component by component "
        "(transformer, unet, vae, text_encoder…), as loaded: a component it shares with "
        "another model (the same VAE file) is counted in each."
    )
    unavailable_on: dict[str, str] = Field(
        description="Live workers that could not load it, and why (its file, in words)."
    )


@router.get("/models", operation_id="list_models")
def list_models(registry: RegistryDep, store: StoreDep, caller: CallerDep) -> list[ModelInfo]:
    """Registered models, the latent space each works in (which decides latent handoffs), and
    which live workers serve and hold them (named `worker-<id>`; admin keys see host and pid)."""
    workers = live_workers(store.redis)

    def shown(worker: str) -> str:
        return worker if caller.admin else public_worker_name(worker)

    out = []
    for name in registry.names():
        entry = registry.models[name]
        arch = entry.arch
        out.append(
            ModelInfo(
                name=name,
                architecture=arch.name,
                latent_space=LatentSpaceInfo(**entry.latent_space.as_ctx()),
                size_multiple=arch.size_multiple,
                text_to_image=entry.text_to_image,
                negative_prompt=arch.negative_prompt,
                guidance_range=entry.guidance_range,
                default_steps=entry.default_steps,
                variant=entry.variant,
                text_encoders=list(arch.text_encoders),
                samplers=[
                    SamplerInfo(name=s.name, schedules=schedules_for(s))
                    for s in samplers_for(arch.name).values()
                ],
                pool=entry.pool,
                workers_serving=[shown(w.name) for w in workers if name in w.models],
                loaded_on=[shown(w.name) for w in workers if name in w.loaded],
                held_on={
                    shown(w.name): {
                        c: ComponentInfo(storage=h.storage, mib=h.mib)
                        for c, h in w.holds[name].items()
                    }
                    for w in workers
                    if name in w.holds
                },
                unavailable_on={
                    shown(w.name): w.unavailable[name] for w in workers if name in w.unavailable
                },
            )
        )
    return out


class LoraInfo(Answer):
    name: str = Field(description="As a stage's `loras[].name`.")
    architecture: ArchitectureName = Field(
        description="The only architecture whose stages may use it."
    )
    file: str = Field(description="Its file name.")
    architecture_from: Literal["header", "registry"] = Field(
        description="`header`: read from the file's keys (and equal to the registry's, where it "
        "names one); `registry`: as the registry writes it."
    )


@router.get("/loras", operation_id="list_loras")
def list_loras(registry: RegistryDep, _: CallerDep) -> list[LoraInfo]:
    """Registered LoRAs and the architecture each was trained for."""
    return [
        LoraInfo(
            name=name,
            architecture=lora.architecture,
            file=lora.file.name,
            architecture_from=lora.architecture_from,
        )
        for name, lora in sorted(registry.loras.items())
    ]


class VaeInfo(Answer):
    name: str = Field(description="As a stage's `vae`.")
    latent_space: LatentSpaceName = Field(
        description="The only latent space it decodes: stages whose model works in it may use it."
    )
    architectures: list[ArchitectureName] = Field(
        description="The architectures of that latent space."
    )
    file: str = Field(description="Its file (or diffusers folder) name.")
    latent_space_from: Literal["header", "registry"] = Field(
        description="`header`: a diffusers folder's config says it; `registry`: as the registry "
        "writes it (a VAE's weights do not tell SD1.5's from SDXL's)."
    )
    channels_checked: bool = Field(
        description="Whether its file was read and its latent channels agree with the space."
    )


@router.get("/vaes", operation_id="list_vaes")
def list_vaes(registry: RegistryDep, _: CallerDep) -> list[VaeInfo]:
    """Registered VAEs and the latent space each decodes."""
    return [
        VaeInfo(
            name=name,
            latent_space=vae.latent_space,
            architectures=[
                a.name for a in ARCHITECTURES.values() if a.latent_space.name == vae.latent_space
            ],
            file=vae.file.name,
            latent_space_from=vae.latent_space_from,
            channels_checked=vae.channels_checked,
        )
        for name, vae in sorted(registry.vaes.items())
    ]


class EmbeddingInfo(Answer):
    name: str = Field(description="The word a prompt names it by (any case, a word of its own).")
    architecture: ArchitectureName = Field(
        description="The only architecture whose stages' prompts may name it."
    )
    file: str = Field(description="Its file name.")
    architecture_from: Literal["header", "registry"] = Field(
        description="`header`: read from the file's layout and widths (and equal to the "
        "registry's, where it names one); `registry`: as the registry writes it."
    )
    vectors: int | None = Field(description="Token positions it takes, where its header says.")


@router.get("/embeddings", operation_id="list_embeddings")
def list_embeddings(registry: RegistryDep, _: CallerDep) -> list[EmbeddingInfo]:
    """Registered textual-inversion embeddings and the architecture each was trained for."""
    return [
        EmbeddingInfo(
            name=name,
            architecture=e.architecture,
            file=e.file.name,
            architecture_from=e.architecture_from,
            vectors=e.vectors,
        )
        for name, e in sorted(registry.embeddings.items())
    ]


class ControlNetInfo(Answer):
    name: str = Field(description="As a stage's `controlnets[].name`.")
    architecture: ArchitectureName = Field(
        description="The only architecture whose stages it may steer."
    )
    file: str = Field(description="Its file (or diffusers folder) name.")
    architecture_from: Literal["header", "registry"] = Field(
        description="`header`: read from its keys or config (and equal to the registry's, where "
        "it names one); `registry`: as the registry writes it. Never from its name."
    )


@router.get("/controlnets", operation_id="list_controlnets")
def list_controlnets(registry: RegistryDep, _: CallerDep) -> list[ControlNetInfo]:
    """Registered ControlNets and the architecture each was made for."""
    return [
        ControlNetInfo(
            name=name, architecture=c.architecture, file=c.file.name,
            architecture_from=c.architecture_from,
        )
        for name, c in sorted(registry.controlnets.items())
    ]  # fmt: skip


class IpAdapterInfo(Answer):
    name: str = Field(description="As a stage's `ip_adapters[].name`.")
    architecture: ArchitectureName = Field(
        description="The only architecture whose stages it may steer."
    )
    file: str = Field(description="Its file name.")
    image_encoder: str = Field(description="The CLIP image encoder folder it reads pictures with.")
    architecture_from: Literal["header", "registry"] = Field(
        description="`header`: read from its keys (and equal to the registry's, where it names "
        "one); `registry`: as the registry writes it. Never from its name."
    )


@router.get("/ip-adapters", operation_id="list_ip_adapters")
def list_ip_adapters(registry: RegistryDep, _: CallerDep) -> list[IpAdapterInfo]:
    """Registered IP-Adapters, the architecture each was made for and its image encoder."""
    return [
        IpAdapterInfo(
            name=name, architecture=a.architecture, file=a.file.name,
            image_encoder=a.image_encoder.name, architecture_from=a.architecture_from,
        )
        for name, a in sorted(registry.ip_adapters.items())
    ]  # fmt: skip


class PresetInfo(Answer):
    name: str = Field(description="As the only stage's `model` (or the OpenAI face's `model`, an "
                      "A1111 checkpoint): the job takes these stages.")  # fmt: skip
    description: str | None
    stages: list[Stage] = Field(
        description="What it runs; the fields the naming stage sets go to the first one."
    )


@router.get("/presets", operation_id="list_presets")
def list_presets(registry: RegistryDep, _: CallerDep) -> list[PresetInfo]:
    """Registered presets: chains of stages under one name, checked when the registry loaded."""
    return [
        PresetInfo(name=name, description=p.description, stages=p.stages)
        for name, p in sorted(registry.presets.items())
    ]


class UpscalerInfo(Answer):
    name: str = Field(description="As a hires stage's `upscaler`.")
    handoff: Literal["pixel", "latent"] = Field(description="The handoff it works with.")
    kind: Literal["resampler", "model"] = Field(
        description="A built-in resampler, or an upscaler model (ESRGAN, SwinIR, …) whose "
        "picture is then resized to the stage's exact size."
    )
    file: str | None = Field(description="An upscaler model's file name.")


@router.get("/upscalers", operation_id="list_upscalers")
def list_upscalers(registry: RegistryDep, _: CallerDep) -> list[UpscalerInfo]:
    """Upscalers for hires stages: the built-in resamplers and the registered upscaler models."""
    built_in = [
        UpscalerInfo(
            name=u.value,
            handoff="latent" if u.works_on_latents else "pixel",
            kind="resampler",
            file=None,
        )
        for u in Upscaler
    ]
    models = [
        UpscalerInfo(name=name, handoff="pixel", kind="model", file=upscaler.file.name)
        for name, upscaler in sorted(registry.upscalers.items())
    ]
    return built_in + models
