"""A broken rule in a job spec, shaped like one entry of FastAPI's 422 `detail` list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Every rule a job can break, by machine name: the closed set clients may switch on (the OpenAPI
# document declares it as an enum). "missing" is pydantic's name for the same thing.
RuleType = Literal[
    "clip_skip_unsupported",
    "computed_value_out_of_range",
    "controlnet_architecture_mismatch",
    "controlnet_unsupported",
    "embedding_architecture_mismatch",
    "field_not_allowed",
    "guidance_out_of_range",
    "handoff_across_pools",
    "image_too_large",
    "image_too_costly",
    "invalid_base64",
    "invalid_image",
    "ip_adapter_architecture_mismatch",
    "job_too_costly",
    "latent_space_mismatch",
    "lora_architecture_mismatch",
    "mask_empty",
    "mask_required",
    "mask_size_mismatch",
    "mask_unsupported",
    "missing",
    "negative_prompt_unsupported",
    "outpaint_size_mismatch",
    "pixel_budget_exceeded",
    "refine_needs_latent_handoff",
    "refine_unsupported",
    "size_not_multiple",
    "text_to_image_unsupported",
    "timeout_over_limit",
    "too_few_steps",
    "unknown_controlnet",
    "unknown_ip_adapter",
    "unknown_lora",
    "unknown_model",
    "unknown_sampler",
    "unknown_upscaler",
    "unknown_schedule",
    "unknown_vae",
    "unsupported_image",
    "upscaler_handoff_mismatch",
    "vae_latent_space_mismatch",
    "webhook_url_refused",
]


@dataclass(frozen=True)
class Violation:
    type: RuleType  # machine name, e.g. "latent_space_mismatch"
    loc: tuple[str | int, ...]  # path inside the request body
    msg: str  # what is wrong and how to fix it
    ctx: dict[str, Any] = field(default_factory=dict)

    def as_error(self, prefix: tuple[str, ...] = ("body",)) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "loc": [*prefix, *self.loc], "msg": self.msg}
        if self.ctx:
            error["ctx"] = self.ctx
        return error


class JobRejected(Exception):
    """Raised where a spec breaks one or more rules; carries every violation found."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, v.loc))}: {v.msg}" for v in violations))
        self.violations = violations
