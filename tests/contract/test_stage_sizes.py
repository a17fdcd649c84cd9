"""Stage sizes: hires stages scale or set the size, and every size suits its model."""

from __future__ import annotations

from contract.registry import ModelEntry
from contract.spec import Stage
from contract.stage_sizes import check_size, hires_size
from contract.violations import Violation

FLUX = ModelEntry.model_validate(
    {"name": "flux", "architecture": "flux", "source": {"folder": "/m/flux"}}
)


def hires(**fields: object) -> Stage:
    return Stage.model_validate({"model": "flux", "mode": "hires", **fields})


def test_hires_scales_by_default_twice() -> None:
    violations: list[Violation] = []
    assert hires_size(1, hires(), (256, 192), violations) == (512, 384)
    assert hires_size(1, hires(scale=1.5), (256, 192), violations) == (384, 288)
    assert hires_size(1, hires(width=320, height=320), (256, 192), violations) == (320, 320)
    assert violations == []


def test_width_without_height_or_disagreeing_with_scale_is_refused() -> None:
    violations: list[Violation] = []
    hires_size(1, hires(width=320), (256, 256), violations)
    hires_size(2, hires(width=320, height=320, scale=2), (256, 256), violations)
    assert [(v.type, v.loc) for v in violations] == [
        ("missing", ("stages", 1, "height")),
        ("field_not_allowed", ("stages", 2, "scale")),
    ]


def test_a_size_off_the_multiple_suggests_the_neighbours() -> None:
    violations: list[Violation] = []
    check_size((264, 256), FLUX, 10**7, ("width",), ("height",), violations)
    [violation] = violations
    assert violation.type == "size_not_multiple"
    assert "use 256 or 272" in violation.msg


def test_a_size_over_the_budget_is_refused_with_an_example_that_fits() -> None:
    violations: list[Violation] = []
    check_size((1024, 1024), FLUX, 512 * 512, ("width",), ("height",), violations)
    [violation] = violations
    assert violation.type == "pixel_budget_exceeded"
    assert "512x512" in violation.msg
