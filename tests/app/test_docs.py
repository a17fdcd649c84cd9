"""Swagger UI is served from this process: no CDN is needed to read the API."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_the_page_and_its_assets_come_from_this_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/static/swagger-ui/"), asset
        assert client.get(asset).status_code == 200
    assert "/openapi.json" in page.text
