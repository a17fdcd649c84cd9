"""Which `Host` an open-mode gateway answers: IP literals, `localhost`, and configured names.

Open mode (no API keys) is for a gateway on loopback, and its one caller is admin. A loopback
port is not private to the machine's own programs, though: a web page the user opens can point
a name it controls at 127.0.0.1 (DNS rebinding) and then drive the gateway from the browser, as
same-origin requests to that name. The one thing such a request cannot hide is its `Host`, which
names the attacker's domain. So in open mode a request whose Host is a name other than
`localhost` or one in IMAGEGEN_ALLOWED_HOSTS is refused (421, before any route runs). IP literals
pass: a page cannot rebind an address. With API keys this check is off: a key is what a browser
page does not have.
"""

from __future__ import annotations

import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

MISDIRECTED = 421


def host_name(header: str) -> str:
    """The name or address in a Host header, without its port or IPv6 brackets."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def allowed(header: str, names: frozenset[str]) -> bool:
    name = host_name(header.strip()).lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name == "localhost" or name in names


def refusal(header: str) -> str:
    return (
        f"this open-mode gateway (no API keys) does not answer for the host {header[:100]!r}: "
        "reach it as localhost or by IP address, add the name to IMAGEGEN_ALLOWED_HOSTS, or "
        "set API keys"
    )


class OpenModeHosts:
    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = frozenset(n.lower().rstrip(".") for n in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host")
            text = header.decode("latin-1") if header is not None else None
            if text is not None and not allowed(text, self.names):
                item = {"type": "host_not_allowed", "loc": ["header", "host"], "msg": refusal(text)}
                await send(
                    {
                        "type": "http.response.start",
                        "status": MISDIRECTED,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send(
                    {"type": "http.response.body", "body": json.dumps({"detail": [item]}).encode()}
                )
                return
        await self.app(scope, receive, send)
