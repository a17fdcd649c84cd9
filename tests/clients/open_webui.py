"""`make clients`: Open WebUI's own image code (PyPI `open-webui`, in its own venv: about 7 GB,
so not in CI) against the service, with Open WebUI's default settings: no A1111 auth, which makes
it send `Authorization: Basic ` with nothing after it.

It starts the service (a private Redis, the demo models, a worker, the gateway), then
`open-webui serve` offline with image generation on the A1111 engine and image editing on the
OpenAI engine, both pointed at the service on loopback. Then it drives Open WebUI's own API, as
its admin page and chat do: verify the connection, list the models, generate, edit. It prints
each step's result and exits non-zero at the first that fails.

    make clients
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from devstack.processes import start_gateway, start_worker, stop, wait_for_gateway, wait_for_workers
from devstack.redis_server import RedisServer, free_port
from jobs.settings import REPO_ROOT

OPEN_WEBUI = "open-webui==0.12.4"
VENV = REPO_ROOT / ".clients-venv"


def main() -> int:
    serve = VENV / "bin" / "open-webui"
    if not serve.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", OPEN_WEBUI], check=True)
    root = Path(tempfile.mkdtemp(prefix="clients-"))
    redis = RedisServer(root / "redis").start()
    port, webui_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "REDIS_URL": redis.url,
        "IMAGEGEN_REGISTRY": str(REPO_ROOT / "deploy/registry.demo.yaml"),
    }
    worker = start_worker(env, root / "worker.log")
    gateway = start_gateway(env, port, root / "gateway.log")
    webui = None
    log = (root / "open-webui.log").open("w")
    try:
        wait_for_gateway(base, gateway)
        wait_for_workers(Redis.from_url(redis.url), [worker])
        webui = subprocess.Popen(
            [str(serve), "serve", "--host", "127.0.0.1", "--port", str(webui_port)],
            cwd=root, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **_webui_env(root, base)},
        )  # fmt: skip
        return _drive(f"http://127.0.0.1:{webui_port}", base)
    finally:
        if webui is not None:
            webui.terminate()
            webui.wait(30)
        log.close()
        stop(gateway)
        stop(worker)
        redis.stop()
        print(f"logs: {root}")


def _webui_env(root: Path, base: str) -> dict[str, str]:
    return {
        "DATA_DIR": str(root / "open-webui"), "WEBUI_AUTH": "False", "WEBUI_SECRET_KEY": "x",
        # offline: nothing leaves loopback (no model hub, no Ollama, no OpenAI)
        "OFFLINE_MODE": "True", "HF_HUB_OFFLINE": "1", "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
        "ENABLE_OLLAMA_API": "False", "ENABLE_OPENAI_API": "False",
        "ENABLE_IMAGE_GENERATION": "True", "IMAGE_GENERATION_ENGINE": "automatic1111",
        "AUTOMATIC1111_BASE_URL": base,
    }  # fmt: skip


def _step(name: str, response: httpx.Response) -> Any:
    ok = response.status_code == 200
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {response.status_code} {response.text[:300]}")
    if not ok:
        raise SystemExit(1)
    return response.json()


def _drive(webui: str, base: str) -> int:
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{webui}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print("FAIL open-webui did not start")
            return 1
        time.sleep(2)
    # WEBUI_AUTH off: an empty sign-in is the admin, as its own front end does
    token = httpx.post(f"{webui}/api/v1/auths/signin", json={"email": "", "password": ""},
                       timeout=30).json()["token"]  # fmt: skip
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{webui}/api/v1/images", headers=bearer, timeout=300) as api:
        config = _step("read the image settings", api.get("/config"))
        print(f"     its A1111 auth as it ships: {config['AUTOMATIC1111_API_AUTH']!r}")
        config.update(
            ENABLE_IMAGE_GENERATION=True, IMAGE_GENERATION_ENGINE="automatic1111",
            AUTOMATIC1111_BASE_URL=base,  # its auth left as it ships: none, so "Basic "
            IMAGE_GENERATION_MODEL="demo-sd15", IMAGE_SIZE="64x64", IMAGE_STEPS=2,
            ENABLE_IMAGE_EDIT=True, IMAGE_EDIT_ENGINE="openai", IMAGE_EDIT_MODEL="demo-sd15",
            IMAGE_EDIT_SIZE="64x64", IMAGES_EDIT_OPENAI_API_BASE_URL=f"{base}/v1",
            IMAGES_EDIT_OPENAI_API_KEY="sk-none",
        )  # fmt: skip
        _step("save them", api.post("/config/update", json=config))
        verify = {"engine": "automatic1111", "url": base, "key": ""}
        _step("verify the A1111 URL (empty auth)", api.post("/verify", json=verify))
        models = _step("list the models", api.get("/models"))
        print(f"     models: {[m.get('id') for m in models]}")
        made = _step("generate", api.post("/generations", json={"prompt": "a lighthouse", "n": 1}))
        url = made[0]["url"]
        picture = httpx.get(f"{webui}{url}" if url.startswith("/") else url,
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        print(
            f"     generated: {len(picture.content)} bytes, {picture.headers.get('content-type')}"
        )
        data_url = "data:image/png;base64," + base64.b64encode(picture.content).decode()
        edit = {"image": data_url, "prompt": "at night"}
        edited = _step("edit (its OpenAI engine)", api.post("/edit", json=edit))
        print(f"     edited: {edited[0].get('url', '')[:80]}")
    print("Open WebUI generated and edited through the service with its default settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
