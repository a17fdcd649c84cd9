"""The VAE rule: a VAE decodes only the latent space it was trained in.

A VAE is a latent space. An SD1.5 VAE on an SDXL model has the right shapes and decodes with the
wrong scaling, silently: the same trap as an SD1.5 -> SDXL latent handoff, refused for the same
reason, at admission and again in the worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from contract.registry import ModelEntry, VaeEntry
from contract.violations import Violation


def vae_violation(
    i: int, name: str | None, entry: ModelEntry, vaes: Mapping[str, VaeEntry]
) -> Violation | None:
    """Why stage i's model cannot decode with the VAE `name`, or None. The gateway and the
    worker both word it so."""
    if name is None:
        return None
    loc = ("stages", i, "vae")
    space = entry.latent_space
    fitting = sorted(n for n, v in vaes.items() if v.latent_space == space.name)
    fits = (
        f"{space.name} VAEs here: {', '.join(fitting)}"
        if fitting
        else f"none here is {space.name}'s"
    )
    vae = vaes.get(name)
    if vae is None:
        known = ", ".join(sorted(vaes)) or "none"
        return Violation(
            "unknown_vae",
            loc,
            f"VAE {name!r} is not registered; registered VAEs: {known} (GET /vaes); leave vae "
            "out for the model's own",
            {"vae": name},
        )
    if vae.latent_space != space.name:
        return Violation(
            "vae_latent_space_mismatch",
            loc,
            f"VAE {name!r} decodes latent space {vae.latent_space}, but stage {i}'s model "
            f"{entry.name!r} ({entry.architecture}) works in latent space {space.describe()}: "
            "it would decode with the wrong scaling, or not at all. Pick a VAE of its latent "
            f"space ({fits}) or leave vae out for the model's own.",
            {"vae_latent_space": vae.latent_space, "model_latent_space": space.name},
        )
    return None
