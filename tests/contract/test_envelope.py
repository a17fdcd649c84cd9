"""The envelope's status vocabulary and image URLs."""

from __future__ import annotations

from contract.envelope import JobStatus, image_url


def test_final_statuses_are_the_three_endings() -> None:
    assert {s for s in JobStatus if s.is_final} == {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELED,
    }


def test_image_url_is_the_gateway_route() -> None:
    assert image_url("abc", 2) == "/jobs/abc/images/2"
