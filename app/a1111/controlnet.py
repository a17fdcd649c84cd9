"""sd-webui-controlnet's API on the A1111 face: its units in `alwayson_scripts.controlnet.args`
become stages' `controlnets` (an IP-Adapter unit, whose `module` is one of the extension's
`ip-adapter…` preprocessors, a stage's `ip_adapters`), and its routes (`/controlnet/…`) list
what is served.

A unit names its model by name or `name [hash]` (as `/controlnet/model_list` lists them);
`module` is `none` (the image is a ready control map) or `canny`; `resize_mode` is one of the
extension's three; `hr_option` puts it on the base pass, the hires pass or both (its default):
each pass's ControlNet must be of that pass's checkpoint's architecture, so an SD1.5 unit and a
Flux unit of one hires-fix request go `Low res only` and `High res only`. `pixel_perfect`,
`processor_res` and `low_vram` change nothing here: the preprocessor always runs at the stage's
own size, which is what pixel-perfect asks for. A refusal points at the unit:
`["body", "alwayson_scripts", "controlnet", "args", j, …]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from app.deps import RegistryDep
from app.errors import documented
from app.keys import A1111CallerDep
from contract.controlnet_files import controlnet_hash
from contract.registry import ControlNetEntry, IpAdapterEntry, ModelRegistry

router = APIRouter(prefix="/controlnet", tags=["a1111"], responses=documented(401, 503))

SCRIPT = "controlnet"
MODULES = {"none": "none", "None": "none", "canny": "canny"}
# The extension's IP-Adapter preprocessors all start so (ip-adapter-auto, ip-adapter_clip_h, …):
# each encodes the picture with the adapter's CLIP image encoder, which is what runs here.
IP_ADAPTER_MODULE = "ip-adapter"
RESIZE_MODES = {
    "Just Resize": "just_resize", 0: "just_resize",
    "Crop and Resize": "crop_and_resize", "Inner Fit (Scale to Fit)": "crop_and_resize",
    1: "crop_and_resize",
    "Resize and Fill": "resize_and_fill", "Envelope (Outer Fit)": "resize_and_fill",
    2: "resize_and_fill",
}  # fmt: skip
CONTROL_MODES = ("Balanced", 0)
HR_OPTIONS = {"Both": ("base", "hires"), "Low res only": ("base",), "High res only": ("hires",)}


def script_key(request: Any) -> str:
    """The request's name for the extension's script, as sent (webuiapi sends `ControlNet`)."""
    return next((k for k in request.alwayson_scripts if k.lower() == SCRIPT), SCRIPT)


def units(request: Any) -> list[dict[str, Any]]:
    """The request's ControlNet units, as sent (an extension's disabled ones included)."""
    script = request.alwayson_scripts.get(script_key(request)) or {}
    args = script.get("args") if isinstance(script, dict) else script
    return [u if isinstance(u, dict) else {} for u in args or []]


def _acting(unit: dict[str, Any]) -> bool:
    model = str(unit.get("model") or "None")
    return unit.get("enabled", True) is not False and model not in ("None", "none", "")


def _is_ip_adapter(unit: dict[str, Any]) -> bool:
    """The extension runs an IP-Adapter with one of its `ip-adapter…` preprocessors (which
    encode the picture with CLIP), and nothing else with them."""
    return str(unit.get("module") or "").startswith(IP_ADAPTER_MODULE)


def unit_indices(request: Any, roles: list[str], ip_adapters: bool = False) -> dict[int, list[int]]:
    """For each stage, the units its `controlnets` (or `ip_adapters`) came from, in order."""
    indices: dict[int, list[int]] = {}
    for j, unit in enumerate(units(request)):
        if not _acting(unit) or _is_ip_adapter(unit) != ip_adapters:
            continue
        passes = HR_OPTIONS.get(str(unit.get("hr_option") or "Both"), ("base", "hires"))
        for i, role in enumerate(roles):
            if role in passes:
                indices.setdefault(i, []).append(j)
    return indices


def with_controlnets(
    request: Any,
    stages: list[dict[str, Any]],
    roles: list[str],
    registry: ModelRegistry,
    init_image: str | None,
) -> None:
    """The request's acting units on the stages they steer (a refine pass takes none)."""
    key = script_key(request)
    for i, js in unit_indices(request, roles).items():
        stages[i]["controlnets"] = [
            _use(units(request)[j], (key, j), registry, init_image) for j in js
        ]
    for i, js in unit_indices(request, roles, ip_adapters=True).items():
        stages[i]["ip_adapters"] = [
            _ip_adapter_use(units(request)[j], (key, j), registry, init_image) for j in js
        ]


def _refusal(unit: dict[str, Any], at: tuple[str, int], field: str, msg: str) -> NoReturn:
    where = ("body", "alwayson_scripts", at[0], "args", at[1], field)
    raise RequestValidationError(
        [{"type": "value_error", "loc": where, "msg": msg, "input": unit.get(field)}]
    )


def _ip_adapter_use(
    unit: dict[str, Any], at: tuple[str, int], registry: ModelRegistry, init_image: str | None
) -> dict[str, Any]:
    model = str(unit.get("model"))
    name = _resolve(model, registry.ip_adapters)
    if name is None:
        listed = ", ".join(_listed(registry.ip_adapters)) or "none"
        _refusal(unit, at, "model", f"IP-Adapter {model!r} is not served here; IP-Adapters in "
                 f"/controlnet/model_list: {listed}")  # fmt: skip
    for field, whole in (("guidance_start", 0), ("guidance_end", 1)):
        value = unit.get(field, whole)
        if value is not None and value != whole:
            _refusal(unit, at, field, "an IP-Adapter acts on the whole schedule here; send "
                     "guidance_start 0 and guidance_end 1")  # fmt: skip
    if unit.get("control_mode", "Balanced") not in CONTROL_MODES:
        _refusal(unit, at, "control_mode", "only control_mode Balanced is served here")
    image = unit.get("image") or unit.get("input_image")
    if isinstance(image, dict):
        image = image.get("image")
    use: dict[str, Any] = {"name": name, "image": image or init_image}
    if unit.get("weight") is not None:
        use["weight"] = unit["weight"]
    return use


def _use(
    unit: dict[str, Any], at: tuple[str, int], registry: ModelRegistry, init_image: str | None
) -> dict[str, Any]:
    def refuse(field: str, msg: str) -> NoReturn:
        _refusal(unit, at, field, msg)

    model = str(unit.get("model"))
    name = resolve_controlnet(model, registry)
    if name is None:
        if _resolve(model, registry.ip_adapters) is not None:
            refuse("model", f"{model!r} is an IP-Adapter: send it with module ip-adapter-auto")
        listed = ", ".join(_listed(registry.controlnets)) or "none"
        refuse("model", f"ControlNet model {model!r} is not served here; ControlNets: {listed}")
    module = MODULES.get(str(unit.get("module") or "none"))
    if module is None:
        refuse("module", f"module {unit.get('module')!r} is not served here; send a ready control "
               "map with module none, or canny (/controlnet/module_list)")  # fmt: skip
    resize = RESIZE_MODES.get(unit.get("resize_mode", "Crop and Resize"))
    if resize is None:
        refuse("resize_mode", "resize_mode is one of Just Resize, Crop and Resize, Resize and Fill")
    if unit.get("control_mode", "Balanced") not in CONTROL_MODES:
        refuse("control_mode", "only control_mode Balanced is served here")
    image = unit.get("image") or unit.get("input_image")
    if isinstance(image, dict):  # the extension's older {"image", "mask"} form
        image = image.get("image")
    use: dict[str, Any] = {
        "name": name,
        "image": image or init_image,  # img2img without one: the init image, as the extension
        "module": module,
        "resize": resize,
    }
    for ours, theirs in (("weight", "weight"), ("guidance_start", "guidance_start"),
                         ("guidance_end", "guidance_end")):  # fmt: skip
        if unit.get(theirs) is not None:
            use[ours] = unit[theirs]
    if module == "canny":  # the extension's thresholds for canny: low, high
        for ours, theirs in (("low_threshold", "threshold_a"), ("high_threshold", "threshold_b")):
            value = unit.get(theirs)
            if isinstance(value, int | float) and value > 0:
                use[ours] = int(value)
    return use


def resolve_controlnet(name: str, registry: ModelRegistry) -> str | None:
    """The registered ControlNet a unit means: its name, `name [hash]`, or its file's name."""
    return _resolve(name, registry.controlnets)


def _resolve(name: str, entries: Mapping[str, ControlNetEntry | IpAdapterEntry]) -> str | None:
    bare = name.rsplit(" [", 1)[0]
    if bare in entries:
        return bare
    return next(
        (n for n, c in sorted(entries.items()) if bare in (c.file.name, c.file.stem)),
        None,
    )


def model_names(registry: ModelRegistry) -> list[str]:
    """As the extension lists its models: `name [hash]` (the name alone where the file is not
    readable here), its IP-Adapters among them (they share its models folder)."""
    return sorted([*_listed(registry.controlnets), *_listed(registry.ip_adapters)])


def _listed(entries: Mapping[str, ControlNetEntry | IpAdapterEntry]) -> list[str]:
    names = []
    for name, entry in sorted(entries.items()):
        short = controlnet_hash(entry.file)
        names.append(f"{name} [{short}]" if short else name)
    return names


def a1111_unit_loc(
    loc: tuple[Any, ...], request: Any, roles: list[str]
) -> tuple[str | int, ...] | None:
    """Where a stage's ControlNet (or IP-Adapter) location is in the A1111 request; None if it
    is none's."""
    if len(loc) < 4 or loc[0] != "stages" or loc[2] not in ("controlnets", "ip_adapters"):
        return None
    js = unit_indices(request, roles, loc[2] == "ip_adapters").get(int(loc[1]), [])
    j = int(loc[3]) if isinstance(loc[3], int) and loc[3] < len(js) else None
    ours_to_theirs = {"name": "model", "resize": "resize_mode", "low_threshold": "threshold_a",
                      "high_threshold": "threshold_b"}  # fmt: skip
    rest = tuple(ours_to_theirs.get(str(p), p) for p in loc[4:])
    unit: tuple[str | int, ...] = () if j is None else ("args", js[j])
    return ("alwayson_scripts", script_key(request), *unit, *rest)


class VersionResponse(BaseModel):
    version: int


class ModelListResponse(BaseModel):
    model_list: list[str] = Field(description="`name [hash]`, as a unit's `model` takes them.")


class ModuleListResponse(BaseModel):
    module_list: list[str]
    module_detail: dict[str, Any]


class ControlType(BaseModel):
    module_list: list[str]
    model_list: list[str]
    default_option: str
    default_model: str


class ControlTypesResponse(BaseModel):
    control_types: dict[str, ControlType]


@router.get("/version", operation_id="controlnet_version")
async def version(_: A1111CallerDep) -> VersionResponse:
    """The extension's API version that clients check for."""
    return VersionResponse(version=2)


@router.get("/model_list", operation_id="controlnet_model_list")
async def model_list(_: A1111CallerDep, registry: RegistryDep) -> ModelListResponse:
    """The registered ControlNets and IP-Adapters (every architecture's: a unit of another
    architecture than its pass's checkpoint is refused)."""
    return ModelListResponse(model_list=model_names(registry))


@router.get("/module_list", operation_id="controlnet_module_list")
async def module_list(_: A1111CallerDep) -> ModuleListResponse:
    """The preprocessors served: none (the image is the control map), canny, and
    ip-adapter-auto (the picture for an IP-Adapter's image encoder)."""
    detail = {
        "none": {"model_free": False, "sliders": []},
        "canny": {
            "model_free": False,
            "sliders": [
                {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255},
                {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255},
            ],
        },
        "ip-adapter-auto": {"model_free": False, "sliders": []},
    }
    return ModuleListResponse(module_list=list(detail), module_detail=detail)


@router.get("/control_types", operation_id="controlnet_control_types")
async def control_types(_: A1111CallerDep, registry: RegistryDep) -> ControlTypesResponse:
    """The extension's control types: All, Canny (whose models here are every ControlNet: a
    ControlNet's kind is not told from its file) and IP-Adapter."""
    names, adapters = _listed(registry.controlnets), _listed(registry.ip_adapters)
    first = names[0] if names else "None"
    modules, models = ["none", "canny"], ["None", *names]
    return ControlTypesResponse(
        control_types={
            "All": ControlType(module_list=[*modules, "ip-adapter-auto"],
                               model_list=["None", *model_names(registry)],
                               default_option="none", default_model="None"),
            "Canny": ControlType(module_list=modules, model_list=models, default_option="canny",
                                 default_model=first),
            "IP-Adapter": ControlType(module_list=["ip-adapter-auto"],
                                      model_list=["None", *adapters],
                                      default_option="ip-adapter-auto",
                                      default_model=adapters[0] if adapters else "None"),
        }
    )  # fmt: skip
