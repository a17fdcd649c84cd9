"""Dependencies: a stream is opened only for a job the caller may see."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.app.conftest import ALICE, BOB, SPEC, auth


def test_another_keys_job_cannot_be_followed(secured: TestClient) -> None:
    job_id = secured.post("/jobs", json=SPEC, headers=auth(ALICE)).json()["id"]
    response = secured.get(f"/jobs/{job_id}/events", headers=auth(BOB))
    assert response.status_code == 404  # not 403: that would confirm the job exists
    assert response.json()["detail"][0]["type"] == "job_not_found"
