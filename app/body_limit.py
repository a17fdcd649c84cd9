"""Refusing request bodies over the configured size before they are read into memory.

Kept instead of FastAPI's own `max_body_size`: for a declared Content-Length over the limit,
Starlette's limiter answers a plain-text "Content Too Large" itself, whatever the app's
exception handlers say, so the 413 would break the one error shape every other answer has.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int) -> HTTPException:
    # app.errors answers it (type body_too_large) with the limit it reads from the settings.
    return HTTPException(status_code=413)


class BodySizeLimit:
    """413 for a declared Content-Length over the limit; for a streamed body, as soon as the
    bytes read pass it (raised as an HTTPException so FastAPI answers it, not as a 500)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            item = {"type": "body_too_large", "loc": ["body"], "msg": message(self.max_bytes)}
            body = json.dumps({"detail": [item]})
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def message(limit: int) -> str:
    return f"the request body is over this deployment's limit of {limit} bytes"
