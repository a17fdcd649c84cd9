"""Refusing a request without a valid API key before its body is read.

FastAPI reads and parses a body before the route's dependencies (the key check among them) run,
so without this anyone could make the gateway buffer up to `max_body_bytes` per request: 16
concurrent 32 MB bodies with no key took it near 1 GB. Requests that carry a body are checked
here first; the route still checks the key (and the owner) as before.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import answer_for
from app.keys import KeyRing, NotAuthenticated, basic_credentials

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class AuthenticateFirst:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        carries_body = scope["type"] == "http" and scope["method"] in _WITH_BODY
        if carries_body and self.keys.caller(_bearer(scope)) is None:  # open mode: a caller
            await answer_for(NotAuthenticated())(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    """The key a request names: a bearer token, or HTTP Basic's password (A1111 clients)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            header = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "basic":
                sent = basic_credentials(header)
                return None if sent is None else sent[1]
            return token.strip() if scheme.lower() == "bearer" else None
    return None
