"""How a stage ends other than with pictures: it cannot run as asked, or it was told to stop."""

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


class Stopped(Exception):
    """The step monitor asked the pipeline to stop (canceled, or out of time)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
