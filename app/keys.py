"""API keys: stored as SHA-256 digests; a request names its key as `Authorization: Bearer <key>`
(or, on the A1111 face, as the password of HTTP Basic, which A1111 clients send).

python -m app.keys new alice     # prints a new key (give it to alice) and the digest to store
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
import sys
from base64 import b64decode
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    name: str  # owns the jobs it creates
    admin: bool  # sees every job

    def may_see(self, owner: str) -> bool:
        return self.admin or owner == self.name


OPEN_CALLER = Caller("anonymous", admin=True)


class NotAuthenticated(Exception):
    def __init__(self) -> None:
        super().__init__("a valid API key is required: send Authorization: Bearer <key>")


class AdminOnly(Exception):
    def __init__(self) -> None:
        super().__init__(
            "this route shows every key's activity: it takes an admin key (IMAGEGEN_ADMIN_KEYS)"
        )


class KeyRing:
    def __init__(self, api_keys: dict[str, str], admin_keys: dict[str, str]) -> None:
        self._callers = {d: Caller(n, admin=False) for n, d in api_keys.items()}
        self._callers.update({d: Caller(n, admin=True) for n, d in admin_keys.items()})

    @property
    def open(self) -> bool:
        return not self._callers

    def caller(self, key: str | None) -> Caller | None:
        if self.open:
            return OPEN_CALLER
        return self._callers.get(digest(key)) if key else None


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`Authorization: Bearer <key>`). Not needed in open mode.",
)


async def _caller(  # async: trivial work, so FastAPI runs it inline, not in a thread
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Caller:
    ring: KeyRing = request.app.state.keys
    caller = ring.caller(credentials.credentials if credentials else None)
    if caller is None:
        raise NotAuthenticated()
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]


async def _admin(caller: CallerDep) -> Caller:
    if not caller.admin:
        raise AdminOnly()
    return caller


AdminDep = Annotated[Caller, Depends(_admin)]


class _ClientsBasic(HTTPBasic):
    """HTTP Basic as A1111's clients send it. Open WebUI and SillyTavern send `Basic ` with
    nothing after it (or a bare user name) when no auth is set, and FastAPI's HTTPBasic answers
    that with a 401 of its own even with auto_error off. Here a header that carries no password
    is no credentials: open mode lets it in, keys turn it away as `not_authenticated`."""

    async def __call__(self, request: HTTPConnection) -> HTTPBasicCredentials | None:  # type: ignore[override]
        sent = basic_credentials(request.headers.get("Authorization"))
        return None if sent is None else HTTPBasicCredentials(username=sent[0], password=sent[1])


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """The (user, password) of an `Authorization: Basic …` header; None where it carries none
    (another scheme, nothing after `Basic `, not base64, no `:`)."""
    scheme, param = get_authorization_scheme_param(authorization)
    if scheme.lower() != "basic" or not param:
        return None
    try:
        decoded = b64decode(param, validate=True).decode()
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


_basic = _ClientsBasic(
    auto_error=False,
    description="A1111 clients' `--api-auth user:key`: any user name, an API key as password.",
)


async def _a1111_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Security(_basic)],
) -> Caller:
    ring: KeyRing = request.app.state.keys
    key = credentials.credentials if credentials else basic.password if basic else None
    caller = ring.caller(key)
    if caller is None:
        raise NotAuthenticated()
    return caller


A1111CallerDep = Annotated[Caller, Depends(_a1111_caller)]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "new":
        print("usage: python -m app.keys new NAME", file=sys.stderr)
        return 2
    key = f"ig_{secrets.token_urlsafe(32)}"
    print(f"key (give to {argv[2]}, shown once): {key}")
    print(f'store: IMAGEGEN_API_KEYS=\'{{"{argv[2]}": "{digest(key)}"}}\'')
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
