"""`make deploy-check`: the deployment as an operator runs it, built and run here with podman.

1. A base image stands in for `python:3.11-slim`, which no registry here serves: Debian
   bookworm's Python 3.11 (and its redis-server, for the Redis container), made with mmdebstrap
   once per machine and kept in IMAGEGEN_DEPLOY_CACHE with podman's storage.
2. Both images are built from the real Dockerfiles; only BASE_IMAGE and, for the worker, the
   torch build (this machine's CPU wheel, mounted into the build) are substituted.
3. docker-compose.yml runs under podman-compose with deploy/check/compose.override.yml (Redis
   from the base image, no GPU reservation); requests go to the API's published 127.0.0.1 port.
4. Through the API: models; SD1.5 -> Flux hires (pixel); SDXL -> refiner (latent); a refused
   latent handoff (422); the worker container's process killed mid-job (SIGKILL, as a crash) and
   the job finished by the restarted container; the stack stopped with SIGTERM mid-job and the
   job found finished or queued, never lost. The containers' health checks are run by hand
   (podman runs them on systemd timers, which this machine lacks).

Figures go to .run/deploy-check/report.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from devstack.redis_server import free_port
from jobs.settings import REPO_ROOT

CACHE = Path(os.environ.get("IMAGEGEN_DEPLOY_CACHE", "/var/cache/imagegen-deploy-check"))
WHEELS = Path(os.environ.get("IMAGEGEN_TORCH_WHEELS", "/opt/wheels"))
STATE = REPO_ROOT / ".run" / "deploy-check"
REDIS_PASSWORD = STATE / "redis_password"
BASE = "localhost/imagegen-base:bookworm"
PROJECT = "imagegen-check"
COMPOSE = REPO_ROOT / "docker-compose.yml"
OVERRIDE = REPO_ROOT / "deploy" / "check" / "compose.override.yml"
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")
CPU_TORCH = "TORCH_PIP_ARGS=--find-links /wheels"

CONTAINERS_CONF = """\
# podman on a machine without CAP_SYS_RESOURCE and without systemd (../shared/notes/containers.md)
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

# What the check runs, each with the Debian packages that bring it, as .ci/run installs them.
TOOLS = {
    "podman": ("podman", "containernetworking-plugins",
               "golang-github-containernetworking-plugin-dnsname"),
    "runc": ("runc",),  # podman alone brings crun; the check's containers.conf names runc
    "mmdebstrap": ("mmdebstrap",),  # the base image, once per machine
}  # fmt: skip
# What .ci/run installs beside them where missing (podman's rootless storage, networking and
# user namespaces): named in the same command, not required.
COMPANIONS = {"fuse-overlayfs": "fuse-overlayfs", "slirp4netns": "slirp4netns",
              "newuidmap": "uidmap"}  # fmt: skip

report: dict[str, Any] = {}


def missing_tools() -> str | None:
    """What this machine lacks to run the check, with the command that installs it; None where
    nothing is missing (without podman the check would end in a FileNotFoundError)."""
    tools = dict(TOOLS)
    if (CACHE / "base.tar").is_file():  # made before: podman imports it, mmdebstrap is not run
        del tools["mmdebstrap"]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    problems = []
    if missing:
        packages = [p for tool in missing for p in tools[tool]]
        packages += [p for tool, p in COMPANIONS.items() if shutil.which(tool) is None]
        verb = "is" if len(missing) == 1 else "are"
        problems.append(
            f"{_and(missing)} {verb} not installed (not found on PATH). On Debian or Ubuntu, as "
            "root (.ci/run installs the same):\n"
            "  apt-get update && apt-get install -y --no-install-recommends " + " ".join(packages)
        )
    if not os.access(PODMAN_COMPOSE, os.X_OK):
        problems.append(f"{PODMAN_COMPOSE} is missing; `make install` installs podman-compose.")
    return "make deploy-check cannot run here: " + "\n".join(problems) if problems else None


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def log(message: str) -> None:
    print(f"[deploy-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def podman_env() -> dict[str, str]:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "containers.conf").write_text(CONTAINERS_CONF)
    (STATE / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{CACHE / "storage"}"\n'
        'runroot = "/run/imagegen-deploy-check"\n'
    )
    return {
        **os.environ,
        "CONTAINERS_CONF": str(STATE / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(STATE / "storage.conf"),
    }


ENV: dict[str, str] = {}


def run(*argv: str, timeout: float = 900, check: bool = True) -> str:
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{output[-4000:]}")
    log(f"{' '.join(argv)[:120]} ({time.monotonic() - started:.1f} s)")
    return done.stdout


def compose(*args: str, check: bool = True) -> str:
    return run(PODMAN_COMPOSE, "-p", PROJECT, "-f", str(COMPOSE), "-f", str(OVERRIDE), *args,
               check=check)  # fmt: skip


def base_image() -> None:
    """The stand-in for python:3.11-slim, built once per machine."""
    if subprocess.run(["podman", "image", "exists", BASE], env=ENV).returncode == 0:
        report["base"] = "cached image"
        return
    started = time.monotonic()
    rootfs = CACHE / "base.tar"
    if not rootfs.is_file():
        partial = CACHE / "base.partial.tar"  # renamed once complete: a killed run leaves no tar
        subprocess.run(["rm", "-rf", str(rootfs), str(partial)], check=True)
        run(
            "mmdebstrap", "--variant=minbase", "--format=tar",
            "--include=python3,python3-pip,python3-venv,ca-certificates,passwd,redis-server",
            # This machine's extra CA certificates (its TLS is intercepted): pip in the builds.
            "--customize-hook=cp /usr/local/share/ca-certificates/*.crt "
            '"$1/usr/local/share/ca-certificates/" 2>/dev/null || true',
            '--customize-hook=chroot "$1" update-ca-certificates',
            '--customize-hook=ln -sf python3 "$1/usr/bin/python"',
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
            "bookworm", str(partial),
        )  # fmt: skip
        partial.rename(rootfs)
    run("podman", "import", "--change", "ENV LANG=C.UTF-8", str(rootfs), BASE)
    report["base"] = f"built in {time.monotonic() - started:.0f} s"


def build(image: str, dockerfile: str, *args: str) -> None:
    started = time.monotonic()
    run(
        "podman", "build", "--format", "docker", "--network", "host",
        "-f", f"deploy/docker/{dockerfile}", "--build-arg", f"BASE_IMAGE={BASE}",
        *args, "-t", image, ".",
    )  # fmt: skip
    size = int(run("podman", "image", "inspect", image, "--format", "{{.Size}}").strip())
    report[image] = {"build_s": round(time.monotonic() - started), "size_mb": size // 10**6}


def build_images() -> None:
    build("imagegen-api", "api.Dockerfile")
    if any(WHEELS.glob("torch-*+cpu-*.whl")):
        # This machine's CPU build, mounted into the build (a stable argument: layers cache).
        cpu_torch = (
            "-v",
            f"{WHEELS}:/wheels:ro",
            "--build-arg",
            "TORCH_PIP_ARGS=--find-links /wheels",
        )
        build("imagegen-worker", "worker.Dockerfile", *cpu_torch)
    else:  # PyPI's build: CUDA, several GB
        build("imagegen-worker", "worker.Dockerfile")
    versions = json.loads(run(
        "podman", "run", "--rm", "imagegen-worker", "python", "-c",
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
        "('torch', 'diffusers', 'transformers')}))",
    ))  # fmt: skip
    report["worker_versions"] = versions
    # The image runs what CI tested: the pins (torch's build label aside).
    pins = dict(
        line.split("==") for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # fmt: skip
    for package, found in versions.items():
        assert found.split("+")[0] == pins[package], f"{package} {found} is not the pin"


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def healthy(service: str) -> bool:
    check = ["podman", "healthcheck", "run", container(service)]
    return subprocess.run(check, env=ENV, capture_output=True, timeout=60).returncode == 0


def wait_for(what: str, probe: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            found = probe()
            if found:
                return found
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def envelope(http: httpx.Client, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
    return found


def finished(http: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        env = envelope(http, job_id)
        return env if env["status"] in ("succeeded", "failed", "canceled") else None

    result: dict[str, Any] = wait_for(f"job {job_id}", done, timeout)
    return result


def run_job(http: httpx.Client, name: str, spec: dict[str, Any]) -> None:
    started = time.monotonic()
    response = http.post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    done = finished(http, response.json()["id"])
    report[name] = {"status": done["status"], "seconds": round(time.monotonic() - started, 1)}
    assert done["status"] == "succeeded", done
    log(f"{name}: {done['status']}, inputs {[t['input'] for t in done['trace']]}")


# Several seconds on a CPU: long enough to be killed or stopped mid-job.
SLOW = {
    "prompt": "slow",
    "width": 384,
    "height": 384,
    "stages": [{"model": "demo-sd15", "steps": 150}],
}


def running(http: httpx.Client) -> str:
    job_id: str = http.post("/jobs", json=SLOW).json()["id"]
    wait_for("the job to run", lambda: (envelope(http, job_id).get("progress") or {}).get("step"))
    return job_id


def scenario(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        wait_for("the API", lambda: http.get("/healthz").status_code == 200)
        wait_for("a worker", lambda: http.get("/readyz").json().get("workers"))
        for service in ("api", "worker", "redis"):
            run("podman", "healthcheck", "run", container(service))
        # The webhook worker: torch-free in the worker image, healthy once RQ lists it.
        wait_for("the webhook worker", lambda: healthy("webhooks"))
        auth = f"REDISCLI_AUTH={REDIS_PASSWORD.read_text().strip()}"
        policy = run(
            "podman", "exec", "--env", auth, container("redis"), "redis-cli", "config", "get",
            "maxmemory-policy",
        ).split()  # fmt: skip
        assert policy == ["maxmemory-policy", "noeviction"], policy
        report["redis_maxmemory_policy"] = policy[1]
        models = {m["name"]: m for m in http.get("/models").json()}
        assert models["demo-flux"]["latent_space"]["channels"] == 16, models
        run_job(http, "sd15_to_flux_hires_pixel", {
            "prompt": "a lighthouse", "seed": 1, "width": 64, "height": 64,
            "stages": [{"model": "demo-sd15", "steps": 4},
                       {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2}],
        })  # fmt: skip
        run_job(http, "sdxl_to_refiner_latent", {
            "prompt": "a lighthouse", "seed": 2, "width": 64, "height": 64,
            "stages": [{"model": "demo-sdxl", "steps": 4},
                       {"model": "demo-sdxl-refiner", "mode": "refine", "handoff": "latent"}],
        })  # fmt: skip
        refused = http.post("/jobs", json={
            "prompt": "p", "width": 64, "height": 64,
            "stages": [{"model": "demo-sd15"},
                       {"model": "demo-flux", "mode": "hires", "handoff": "latent"}],
        })  # fmt: skip
        assert refused.status_code == 422, refused.text
        report["sd15_to_flux_latent"] = refused.json()["detail"][0]["type"]
        assert report["sd15_to_flux_latent"] == "latent_space_mismatch"

        # A crash: the worker container's process killed; its restart policy brings it back.
        before = set(http.get("/models").json()[0]["workers_serving"])
        job_id = running(http)
        pid = int(run("podman", "inspect", container("worker"), "--format", "{{.State.Pid}}"))
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        done = finished(http, job_id)
        assert done["status"] == "succeeded", done
        assert done["trace"][0]["worker"] not in before, "finished by the killed worker?"
        restarts = run("podman", "inspect", container("worker"), "--format", "{{.RestartCount}}")
        report["worker_kill"] = {
            "job": done["status"],
            "recovered_s": round(time.monotonic() - killed, 1),
            "container_restarts": int(restarts),
        }

        # SIGTERM mid-job, in the order Docker Compose stops a project (dependents first): the
        # worker finishes its job (RQ's warm shutdown) before it exits.
        job_id = running(http)
        stopping = time.monotonic()
        compose("stop", "worker")
        report["sigterm_worker"] = {
            "job": envelope(http, job_id)["status"],
            "stop_s": round(time.monotonic() - stopping, 1),
        }
        assert report["sigterm_worker"]["job"] == "succeeded", report

        # podman-compose 1.6 stops Redis first: the worker mid-job then waits for Redis until its
        # grace period ends and is killed. The job must come back when the project starts again.
        compose("start", "worker")
        wait_for("the worker again", lambda: http.get("/readyz").json().get("workers"))
        job_id = running(http)
        compose("stop", "-t", "15")
        compose("start")
        restarted = time.monotonic()
        done = finished(http, job_id)
        report["sigterm_project_redis_first"] = {
            "job": done["status"],
            "finished_s_after_start": round(time.monotonic() - restarted, 1),
        }
        assert done["status"] == "succeeded", done


def main() -> int:
    lacking = missing_tools()
    if lacking:
        print(lacking, file=sys.stderr)
        return 1
    ENV.update(podman_env())
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    port = free_port()
    REDIS_PASSWORD.parent.mkdir(parents=True, exist_ok=True)
    REDIS_PASSWORD.write_text(secrets.token_hex(32) + "\n")  # compose's redis_password secret
    ENV.update({
        "IMAGEGEN_PORT": str(port), "IMAGEGEN_MODELS_DIR": str(REPO_ROOT / ".models"),
        "REDIS_PASSWORD_FILE": str(REDIS_PASSWORD),
    })  # fmt: skip
    compose("down", "-v", check=False)  # what an interrupted run left
    try:
        base_image()
        build_images()
        compose("up", "-d", "redis", "api", "worker", "webhooks")
        scenario(port)
    finally:
        (STATE / "logs.txt").write_text(
            "\n".join(
                run("podman", "logs", "--tail", "200", container(s), check=False)
                for s in ("api", "worker", "webhooks", "redis")
            )
        )
        compose("down", "-v", check=False)
        report["total_s"] = round(time.monotonic() - started)
        (STATE / "report.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
