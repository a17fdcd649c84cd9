"""The webhook worker process: torch-free, and it delivers (tests/stack/test_webhooks.py runs it
for real, kill -9 included)."""

from __future__ import annotations

import subprocess
import sys

from jobs.settings import REPO_ROOT


def test_the_webhook_worker_never_imports_torch() -> None:
    # It runs beside the gateway or anywhere small: loading torch would cost ~1 GB for nothing.
    probe = "import sys, jobs.webhook_worker; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_webhook_worker_starts_where_torch_and_the_worker_package_are_absent() -> None:
    # As on the gateway's image: both imports fail, the webhook worker's does not.
    probe = (
        "import sys; sys.modules['torch'] = None; sys.modules['workers'] = None; "
        "import jobs.webhook_worker as w; print(callable(w.main))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
