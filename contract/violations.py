"""A broken rule in a job spec, shaped like one entry of FastAPI's 422 `detail` list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Violation:
    type: str  # machine name, e.g. "latent_space_mismatch"
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
