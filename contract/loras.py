"""The LoRA rule: a LoRA adapts only models of the architecture it was trained for.

Loading an SD1.5 LoRA into SDXL or Flux is the "State Dict" error the article started from, met
mid-job; the gateway refuses it at admission like a mismatched latent handoff, and the worker
checks again before loading (a job can reach Redis by other paths).
"""

from __future__ import annotations

from collections.abc import Mapping

from contract.registry import LoraEntry, ModelEntry, ModelRegistry
from contract.spec import LoraUse, Stage
from contract.violations import Violation


def check_loras(
    i: int, stage: Stage, entry: ModelEntry, registry: ModelRegistry, violations: list[Violation]
) -> None:
    """Every LoRA of the stage exists and was trained for the stage's architecture: an SD1.5
    LoRA in an SDXL or Flux model is the same mistake as a latent handoff across spaces."""
    for j, use in enumerate(stage.loras or ()):
        violation = lora_violation(i, j, use, entry, registry.loras)
        if violation is not None:
            violations.append(violation)


def lora_violation(
    i: int, j: int, use: LoraUse, entry: ModelEntry, loras: Mapping[str, LoraEntry]
) -> Violation | None:
    """Why LoRA j of stage i cannot adapt the stage's model, or None. The gateway and the
    worker both word it so."""
    lora = loras.get(use.name)
    loc = ("stages", i, "loras", j)
    if lora is None:
        known = ", ".join(sorted(loras)) or "none"
        return Violation(
            "unknown_lora",
            (*loc, "name"),
            f"LoRA {use.name!r} is not registered; registered LoRAs: {known} (GET /loras)",
            {"lora": use.name},
        )
    if lora.architecture != entry.architecture:
        return Violation(
            "lora_architecture_mismatch",
            loc,
            f"LoRA {use.name!r} was trained for {lora.architecture}, but stage {i}'s model "
            f"{entry.name!r} is {entry.architecture}: its weights do not fit that model; pick a "
            f"{entry.architecture} LoRA or put it on a {lora.architecture} stage",
            {"lora": lora.architecture, "model": entry.architecture},
        )
    return None
