"""Open mode answers only for IP literals, localhost and configured names, so a web page cannot
drive a loopback gateway by pointing a name of its own at 127.0.0.1 (DNS rebinding)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.hosts import allowed, host_name
from app.keys import digest
from app.main import create_app
from app.settings import GatewaySettings


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8000", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("example.org", "example.org"),
    ],
)
def test_the_host_is_read_without_its_port(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "header",
    ["localhost", "LOCALHOST:8000", "localhost.", "127.0.0.1:8000", "[::1]:8000", "10.0.0.5"],
)
def test_addresses_and_localhost_pass(header: str) -> None:
    assert allowed(header, frozenset())


@pytest.mark.parametrize(
    "header", ["attacker.example", "attacker.example:8000", "localhost.attacker.example", "", "[x]"]
)
def test_other_names_do_not(header: str) -> None:
    assert not allowed(header, frozenset())


def test_a_configured_name_passes() -> None:
    assert allowed("imagegen:8000", frozenset({"imagegen"}))


def test_an_open_mode_gateway_refuses_a_foreign_host_on_every_face(
    gateway_settings: GatewaySettings,
) -> None:
    settings = gateway_settings.model_copy(update={"allowed_hosts": []})
    with TestClient(create_app(settings), base_url="http://attacker.example:8000") as client:
        for method, path in [
            ("GET", "/healthz"),
            ("GET", "/models"),
            ("POST", "/jobs"),
            ("GET", "/sdapi/v1/sd-models"),
            ("GET", "/docs"),
        ]:
            response = client.request(method, path, json={})
            assert response.status_code == 421, path
            [item] = response.json()["detail"]
            assert (item["type"], item["loc"]) == ("host_not_allowed", ["header", "host"])
            assert "IMAGEGEN_ALLOWED_HOSTS" in item["msg"]
        openai = client.get("/v1/models")
        assert openai.status_code == 421
        assert openai.json()["error"]["code"] == "host_not_allowed"
    with TestClient(create_app(settings), base_url="http://localhost:8000") as client:
        assert client.get("/healthz").status_code == 200
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        assert client.get("/models").status_code == 200


def test_with_api_keys_any_host_is_answered(gateway_settings: GatewaySettings) -> None:
    # A key is what a rebinding page does not have; behind a proxy any name may arrive.
    key = "ig_test-key"
    keys = {"a": digest(key)}
    settings = gateway_settings.model_copy(update={"allowed_hosts": [], "api_keys": keys})
    with TestClient(create_app(settings), base_url="http://images.example.org") as client:
        response = client.get("/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200


def test_allowed_hosts_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_ALLOWED_HOSTS", "imagegen, gateway.internal")
    assert GatewaySettings().allowed_hosts == ["imagegen", "gateway.internal"]
