"""A stage that cannot run as asked: raised in the stage's code, filed as a `Failed` outcome
(workers.stages.outcomes) where the chain catches it."""

from __future__ import annotations

from contract.envelope import FailureType
from contract.violations import Violation


class StageError(Exception):
    """A stage cannot run as asked; `type` is the machine name clients see."""

    def __init__(self, type_: FailureType, message: str) -> None:
        super().__init__(message)
        self.type = type_

    @classmethod
    def refusing(cls, violation: Violation, type_: FailureType) -> StageError:
        """A job rule broken at run time, in the words the gateway refuses it with."""
        return cls(type_, violation.msg)
