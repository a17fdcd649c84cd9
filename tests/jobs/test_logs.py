"""Logs are JSON lines; every line about a job carries its id."""

from __future__ import annotations

import json
import logging
import logging.config

import pytest
import uvicorn.config

from jobs.logs import JsonFormatter, configure, job_context


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


def test_the_servers_own_tracebacks_become_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    # Uvicorn configures plain-text handlers on its loggers before the app (and our logging)
    # starts; its "Exception in ASGI application" must come out as a JSON line too.
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
    configure()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    [line] = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["msg"] == "Exception in ASGI application"
    assert "RuntimeError: boom" in record["exc"]
