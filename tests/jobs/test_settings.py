"""Common settings: read from IMAGEGEN_* variables, empty ones ignored, limits derived."""

from __future__ import annotations

import pytest

from jobs.settings import CommonSettings, unknown_variables


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


def test_an_unknown_variable_fails_start_up_naming_what_it_may_mean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by a hostile pass: the README's `..._PER_KEY` read as this name, which did nothing.
    monkeypatch.setenv("IMAGEGEN_MAX_OUTSTANDING_JOBS_PER_KEY", "5")
    with pytest.raises(ValueError, match=r"did you mean IMAGEGEN_MAX_OUTSTANDING_PER_KEY\?"):
        CommonSettings()


def test_compose_and_test_variables_are_not_settings_but_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("IMAGEGEN_PORT", "IMAGEGEN_MODELS_DIR", "IMAGEGEN_TEST_FUZZ_SECONDS"):
        monkeypatch.setenv(name, "1")
    assert unknown_variables({"IMAGEGEN_POOL": "x", "IMAGEGEN_PORT": "1", "OTHER": "y"}) == []
    CommonSettings()
