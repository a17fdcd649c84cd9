"""Common settings: read from IMAGEGEN_* variables, empty ones ignored, limits derived."""

from __future__ import annotations

from pathlib import Path

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


def test_secrets_are_read_from_the_files_their_file_variables_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "url").write_text("rediss://:pw@redis.internal:6380/0?ssl_ca_certs=/ca.crt\n")
    (tmp_path / "secret").write_text("whsec_c2VjcmV0")
    monkeypatch.setenv("REDIS_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("IMAGEGEN_WEBHOOK_SECRET_FILE", str(tmp_path / "secret"))
    settings = CommonSettings()
    assert settings.redis_url == "rediss://:pw@redis.internal:6380/0?ssl_ca_certs=/ca.crt"
    assert settings.webhook_secret == "whsec_c2VjcmV0"
    assert unknown_variables({"IMAGEGEN_API_KEYS_FILE": "x", "REDIS_URL_FILE": "y"}) == []


def test_a_secret_set_twice_or_in_a_missing_file_fails_start_up_saying_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"REDIS_URL_FILE: cannot read .*absent"):
        CommonSettings()
    (tmp_path / "url").write_text("redis://127.0.0.1:6379/0")
    monkeypatch.setenv("REDIS_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    with pytest.raises(ValueError, match="REDIS_URL_FILE and REDIS_URL are both set"):
        CommonSettings()


def test_a_redis_password_goes_into_a_url_that_carries_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "password").write_text("p@ss/word\n")  # as compose's secret holds it
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("IMAGEGEN_REDIS_PASSWORD_FILE", str(tmp_path / "password"))
    assert CommonSettings().redis_connection_url == "redis://:p%40ss%2Fword@redis:6379/0"
    monkeypatch.setenv("REDIS_URL", "rediss://app:own@redis:6380/1")  # its own: kept
    assert CommonSettings().redis_connection_url == "rediss://app:own@redis:6380/1"


def test_sentinels_and_replicas_are_read_and_a_bad_address_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEGEN_REDIS_SENTINELS", "s1:26379,s2:26379,s3:26379")
    monkeypatch.setenv("IMAGEGEN_REDIS_PASSWORD", "pw")
    monkeypatch.setenv("IMAGEGEN_REDIS_MIN_REPLICAS", "1")
    settings = CommonSettings()
    target = settings.redis_target
    assert target.sentinels == (("s1", 26379), ("s2", 26379), ("s3", 26379))
    assert target.master == "imagegen"
    assert target.url == "redis://:pw@127.0.0.1:6379/0"  # its password reaches every node
    assert settings.replication is not None
    assert settings.replication.replicas == 1
    assert settings.replication.timeout_ms == 1000
    monkeypatch.setenv("IMAGEGEN_REDIS_SENTINELS", "s1:26379,s2")
    with pytest.raises(ValueError, match="IMAGEGEN_REDIS_SENTINELS: 's2' is not host:port"):
        CommonSettings()
    monkeypatch.delenv("IMAGEGEN_REDIS_SENTINELS")
    monkeypatch.setenv("IMAGEGEN_REDIS_MIN_REPLICAS", "0")
    assert CommonSettings().replication is None  # no WAIT at all
    assert CommonSettings().redis_target.sentinels == ()
