"""The embedding rule: a textual-inversion embedding in a prompt only for models of the
architecture it was trained for.

An SD1.5 embedding holds 768-wide vectors for CLIP-L; SDXL reads its prompt with CLIP-L and
CLIP-G (768 + 1280); Flux and SD3.5 take none. A prompt that names an embedding of another
architecture than its stage's model is refused at admission at the prompt that names it, and
again by the worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from contract.embedding_files import named_in
from contract.registry import EmbeddingEntry, ModelEntry
from contract.spec import JobSpec, Stage
from contract.violations import Violation


def embeddings_of(
    spec: JobSpec, stage: Stage, embeddings: Mapping[str, EmbeddingEntry]
) -> list[str]:
    """The registered embeddings the stage's prompt or negative prompt names."""
    names = sorted(embeddings)
    negative = stage.negative_prompt if stage.negative_prompt is not None else spec.negative_prompt
    found = named_in(stage.prompt or spec.prompt, names) + named_in(negative, names)
    return list(dict.fromkeys(found))


def embedding_violations(
    i: int, spec: JobSpec, stage: Stage, entry: ModelEntry, embeddings: Mapping[str, EmbeddingEntry]
) -> list[Violation]:
    """Why the embeddings stage i's prompts name cannot go to its model, one violation per
    prompt and word. The gateway and the worker both word them so."""
    names = sorted(embeddings)
    own_negative = stage.negative_prompt is not None
    prompts: list[tuple[tuple[str | int, ...], str | None]] = [
        (("stages", i, "prompt") if stage.prompt else ("prompt",), stage.prompt or spec.prompt),
    ]
    if entry.arch.negative_prompt:  # a model that reads none reads no word of it
        prompts.append(
            (
                ("stages", i, "negative_prompt") if own_negative else ("negative_prompt",),
                stage.negative_prompt if own_negative else spec.negative_prompt,
            )
        )
    violations = []
    for loc, text in prompts:
        for name in named_in(text, names):
            trained_for = embeddings[name].architecture
            if trained_for == entry.architecture:
                continue
            fits = sorted(n for n, e in embeddings.items() if e.architecture == entry.architecture)
            takes = (
                f"its {entry.architecture} embeddings here: {', '.join(fits) or 'none'}"
                if entry.arch.embedding_keys is not None
                else f"{entry.architecture} prompts take no embeddings"
            )
            field = str(loc[-1])
            fix = (
                f"Remove the word from stage {i}'s {field}"
                if loc[0] == "stages"
                else f"Remove the word, or give stage {i} its own {field} without it"
            )
            violations.append(
                Violation(
                    "embedding_architecture_mismatch",
                    loc,
                    f"the word {name!r} names an embedding trained for {trained_for}, but stage "
                    f"{i}'s model {entry.name!r} is {entry.architecture}: its vectors do not fit "
                    f"that model's text encoders ({takes}). {fix}.",
                    {"embedding": name, "embedding_architecture": trained_for,
                     "model": entry.architecture},
                )
            )  # fmt: skip
    return violations
