"""Swagger UI served from this process: the page must work where no CDN is reachable.

The Swagger UI build comes from the `fastapi-offline` package's static files (only the files are
used; the app stays a plain FastAPI app).

In open mode (no API keys) the document declares no security requirement: it is true there, and
generated clients then accept a plain, unauthenticated client. With keys, every operation but the
health checks requires `Authorization: Bearer <key>`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/static/swagger-ui"


def install(app: FastAPI, open_mode: bool) -> None:
    if open_mode:
        _without_security(app)
    app.mount(STATIC, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": False},
        )


def _without_security(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # FastAPI caches it in app.openapi_schema: edited in place once
            for operations in document["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
            document.get("components", {}).pop("securitySchemes", None)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
