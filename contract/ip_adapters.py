"""The IP-Adapter rule: an IP-Adapter steers only models of the architecture it was made for.

Its image keys project into its model's cross-attention width: an SD1.5 adapter on an SDXL
model is a shape error mid-run (768 against 2048), and diffusers' `load_ip_adapter` takes it
anyway until the first step. The gateway refuses it at admission, naming both sides and what
fits, and the worker checks again. The picture is decoded at admission too (a bad one is the
caller's 422, not a failed job).
"""

from __future__ import annotations

from collections.abc import Mapping

from contract.registry import IpAdapterEntry, ModelEntry
from contract.spec import IpAdapterUse, Stage
from contract.violations import Violation


def ip_adapter_violation(
    i: int,
    j: int,
    use: IpAdapterUse,
    entry: ModelEntry,
    adapters: Mapping[str, IpAdapterEntry],
) -> Violation | None:
    """Why IP-Adapter j of stage i cannot steer the stage's model, or None. The gateway and the
    worker both word it so."""
    loc = ("stages", i, "ip_adapters", j)
    adapter = adapters.get(use.name)
    if adapter is None:
        known = ", ".join(sorted(adapters)) or "none"
        return Violation(
            "unknown_ip_adapter",
            (*loc, "name"),
            f"IP-Adapter {use.name!r} is not registered; registered IP-Adapters: {known} (GET "
            "/ip-adapters)",
            {"ip_adapter": use.name},
        )
    if adapter.architecture != entry.architecture:
        fitting = sorted(n for n, a in adapters.items() if a.architecture == entry.architecture)
        fits = f"{entry.architecture} IP-Adapters here: {', '.join(fitting) or 'none'}"
        return Violation(
            "ip_adapter_architecture_mismatch",
            loc,
            f"IP-Adapter {use.name!r} was made for {adapter.architecture}, but stage {i}'s "
            f"model {entry.name!r} is {entry.architecture}: its image keys do not fit that "
            f"model's cross-attention. Pick an IP-Adapter of its architecture ({fits}) or put "
            f"it on a {adapter.architecture} stage.",
            {"ip_adapter": adapter.architecture, "model": entry.architecture},
        )
    return None


def check_ip_adapters(
    i: int,
    stage: Stage,
    entry: ModelEntry,
    adapters: Mapping[str, IpAdapterEntry],
    violations: list[Violation],
) -> None:
    """Every IP-Adapter of stage i exists and fits the stage's model. (Its picture is decoded
    after every cheap check: `contract.job_rules.decode_pictures`.)"""
    for j, use in enumerate(stage.ip_adapters or []):
        misfit = ip_adapter_violation(i, j, use, entry, adapters)
        if misfit is not None:
            violations.append(misfit)
