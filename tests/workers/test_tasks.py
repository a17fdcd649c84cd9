"""The function RQ calls by name needs the worker's runner."""

from __future__ import annotations

import pytest

from workers.tasks import run_job


def test_plain_rq_without_the_imagegen_worker_is_told_what_to_run() -> None:
    with pytest.raises(RuntimeError, match="python -m workers"):
        run_job("some-job")
