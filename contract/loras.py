"""The LoRA rule: a LoRA adapts only models of the architecture it was trained for.

Loading an SD1.5 LoRA into SDXL or Flux is the "State Dict" error the article started from, met
mid-job; the gateway refuses it at admission like a mismatched latent handoff, and the worker
checks again before loading (a job can reach Redis by other paths).
"""

from __future__ import annotations

from contract.registry import ModelEntry, ModelRegistry
from contract.spec import Stage
from contract.violations import Violation


def check_loras(
    i: int, stage: Stage, entry: ModelEntry, registry: ModelRegistry, violations: list[Violation]
) -> None:
    """Every LoRA of the stage exists and was trained for the stage's architecture: an SD1.5
    LoRA in an SDXL or Flux model is the same mistake as a latent handoff across spaces."""
    for j, use in enumerate(stage.loras or ()):
        lora = registry.loras.get(use.name)
        loc = ("stages", i, "loras", j)
        if lora is None:
            known = ", ".join(sorted(registry.loras)) or "none"
            violations.append(
                Violation(
                    "unknown_lora",
                    (*loc, "name"),
                    f"LoRA {use.name!r} is not registered; registered LoRAs: {known} (GET /loras)",
                    {"lora": use.name},
                )
            )
        elif lora.architecture != entry.architecture:
            violations.append(
                Violation(
                    "lora_architecture_mismatch",
                    loc,
                    f"LoRA {use.name!r} was trained for {lora.architecture}, but stage {i}'s "
                    f"model {entry.name!r} is {entry.architecture}: its weights do not fit that "
                    f"model; pick a {entry.architecture} LoRA or put it on a "
                    f"{lora.architecture} stage",
                    {"lora": lora.architecture, "model": entry.architecture},
                )
            )
