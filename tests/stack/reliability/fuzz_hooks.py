"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): steer half of the positive POST /jobs
cases towards jobs the gateway admits.

A random string is never a registered model and random stages rarely obey the chain rules, so
left alone nearly every generated job is refused with 422 and the stateful phase never gets a job
id to follow the document's links with. A steered body keeps the generated top-level fields
(prompt, seed, webhook…) and takes one of the worked chains. Negative cases are left alone: they
must stay invalid for the fuzzer's "invalid data was accepted" check to mean anything.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

CHAINS: list[list[dict[str, Any]]] = [
    [{"model": "demo-sd15", "steps": 2}],
    [{"model": "demo-flux", "steps": 2}],
    [
        {"model": "demo-sd15", "steps": 2},
        {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2},
    ],
    [
        {"model": "demo-sdxl", "steps": 2},
        {"model": "demo-sdxl-refiner", "mode": "refine", "handoff": "latent", "steps": 2},
    ],
]


@schemathesis.hook
def flatmap_case(context: schemathesis.HookContext, case: Any) -> st.SearchStrategy[Any]:
    meta = case.meta
    if (
        (case.method.upper(), case.path) != ("POST", "/jobs")
        or not isinstance(case.body, dict)
        or meta is None
        or meta.generation.mode is not GenerationMode.POSITIVE
    ):
        return st.just(case)

    generated = case.body

    def steered(chain: list[dict[str, Any]]) -> Any:
        # In place (a Case cannot be copied); setting `body` makes schemathesis re-check the
        # case's metadata against the schema.
        case.body = {**generated, "width": 64, "height": 64, "num_images": 1, "stages": chain}
        return case

    return st.one_of(st.just(case), st.sampled_from(CHAINS).map(steered))


# The A1111 and OpenAI faces answer when their job has ended: those calls wait for it, not the
# one second that keeps every open event stream from holding the run.
WAITING = {
    ("POST", "/sdapi/v1/txt2img"), ("POST", "/sdapi/v1/img2img"),
    ("POST", "/v1/images/generations"), ("POST", "/v1/images/edits"),
}  # fmt: skip


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, kwargs: dict[str, Any]) -> None:
    if (case.method.upper(), case.path) in WAITING:
        kwargs["timeout"] = 60
