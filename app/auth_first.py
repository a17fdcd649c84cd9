"""Refusing a request without a valid API key before its body is read.

FastAPI reads and parses a body before the route's dependencies (the key check among them) run,
so without this anyone could make the gateway buffer up to `max_body_bytes` per request: 16
concurrent 32 MB bodies with no key took it near 1 GB. Requests that carry a body are checked
here first; the route still checks the key (and the owner) as before. `UploadsPerKey` then
bounds how many large bodies one key has in flight (`app.uploads`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import answer_for
from app.keys import KeyRing, NotAuthenticated, basic_credentials
from app.uploads import LARGE_BODY_BYTES, TooManyUploads, UploadSlots

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class AuthenticateFirst:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        carries_body = scope["type"] == "http" and scope["method"] in _WITH_BODY
        if carries_body and self.keys.caller(presented_key(scope)) is None:  # open mode: a caller
            await answer_for(NotAuthenticated())(scope, receive, send)
            return
        await self.app(scope, receive, send)


def presented_key(scope: Scope) -> str | None:
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


class UploadsPerKey:
    def __init__(self, app: ASGIApp, keys: KeyRing, limit: int) -> None:
        self.app = app
        self.keys = keys
        self.slots = UploadSlots(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = self.keys.caller(presented_key(scope)) if _large(scope) else None
        if caller is None:  # small, or no key (which the routes refuse)
            await self.app(scope, receive, send)
            return
        if not self.slots.take(caller.name):
            await answer_for(TooManyUploads(self.slots.limit))(scope, receive, send)
            return
        with self.slots.held(caller.name):
            await self.app(scope, receive, send)


def _large(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
        return False
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is None:
        return True
    return not declared.isdigit() or int(declared) > LARGE_BODY_BYTES
