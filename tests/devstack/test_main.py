"""`make run`: a port that is taken is said plainly, with the way out, before anything starts."""

from __future__ import annotations

import socket

import pytest

from devstack.__main__ import main


def test_a_taken_port_is_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("PORT", str(port))
        assert main() == 2
    err = capsys.readouterr().err
    assert f"port {port} is already in use" in err
    assert f"make run PORT={port + 1}" in err
