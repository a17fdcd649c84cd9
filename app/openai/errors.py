"""Errors on the OpenAI face in OpenAI's shape, which its SDKs parse:
`{"error": {"message", "type", "param", "code"}}`.

Every error the gateway raises keeps its one table (`app.errors`); this middleware rewrites the
bodies of `/v1/` answers only, so a refusal says the same thing on every face. A 422 (a field
that breaks a rule) becomes OpenAI's 400, which is what its clients handle as a bad request;
`code` keeps this service's machine type and `param` names the field.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/v1/"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    503: "server_error",
}


def openai_error(status: int, detail: list[dict[str, Any]]) -> dict[str, Any]:
    """An error body of the gateway (`{"detail": [items]}`) as OpenAI writes it."""
    first = detail[0] if detail else {}
    loc = [str(p) for p in first.get("loc") or [] if p != "body"]
    message = "; ".join(str(item.get("msg", "")) for item in detail) or "error"
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": ".".join(loc[-1:]) if loc else None,
            "code": first.get("type"),
        }
    }


class OpenAIErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # held until the body is read
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status, body = start["status"], b"".join(chunks)
            try:
                detail = json.loads(body)["detail"]
                status = 400 if status == 422 else status
                body = json.dumps(openai_error(status, detail)).encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # not one of the gateway's error bodies: as it is
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewriting)
