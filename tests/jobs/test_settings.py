"""Common settings: read from IMAGEGEN_* variables, empty ones ignored, limits derived."""

from __future__ import annotations

import pytest

from jobs.settings import CommonSettings


def test_variables_are_read_and_empty_ones_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7/0")
    monkeypatch.setenv("IMAGEGEN_MAX_PIXELS", "4096")
    monkeypatch.setenv("IMAGEGEN_JOB_TIMEOUT_S", "")  # compose passes ${VAR:-} through as ""
    settings = CommonSettings()
    assert settings.redis_url == "redis://127.0.0.1:7/0"
    assert settings.limits.max_pixels == 4096
    assert settings.limits.default_timeout_s == 600


def test_webhooks_are_off_without_a_secret() -> None:
    assert CommonSettings().webhooks.secret is None
    assert CommonSettings(webhook_secret="s").webhooks.secret == "s"
