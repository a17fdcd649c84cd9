"""Logs are JSON lines; every line about a job carries its id."""

from __future__ import annotations

import json
import logging

from jobs.logs import JsonFormatter, job_context


def line(record: logging.LogRecord) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def record(msg: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("imagegen.test", logging.INFO, __file__, 1, msg, None, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_line_is_json_with_level_logger_and_message() -> None:
    parsed = line(record("hello %s"))
    assert parsed["level"] == "INFO"
    assert parsed["logger"] == "imagegen.test"
    assert parsed["msg"] == "hello %s"
    assert "job_id" not in parsed


def test_the_job_id_comes_from_the_context_or_extra() -> None:
    with job_context("job-1"):
        assert line(record("in a job"))["job_id"] == "job-1"
    assert line(record("about a job", job_id="job-2", pool="p"))["pool"] == "p"
    assert line(record("after"))
    assert "job_id" not in line(record("after"))
