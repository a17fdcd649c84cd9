"""A violation reads as one entry of FastAPI's 422 `detail` list."""

from __future__ import annotations

from contract.violations import JobRejected, Violation


def test_a_violation_is_located_in_the_body_and_keeps_its_context() -> None:
    violation = Violation(
        "size_not_multiple", ("stages", 1, "width"), "use 256", {"multiple_of": 16}
    )
    assert violation.as_error() == {
        "type": "size_not_multiple",
        "loc": ["body", "stages", 1, "width"],
        "msg": "use 256",
        "ctx": {"multiple_of": 16},
    }
    assert "ctx" not in Violation("missing", ("mode",), "say which").as_error()


def test_a_rejection_carries_every_violation() -> None:
    rejected = JobRejected([Violation("a", ("x",), "fix x"), Violation("b", ("y", 0), "fix y")])
    assert [v.type for v in rejected.violations] == ["a", "b"]
    assert str(rejected) == "x: fix x; y.0: fix y"
