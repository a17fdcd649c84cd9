"""deploy/kubernetes/, checked offline: every object validated against the Kubernetes API's
schemas and KEDA's CRDs (npm's kubernetes-models and @kubernetes-models/keda, pinned in
tests/npm; no cluster), and what ties the objects to the service: each ScaledObject counts the
queue its Deployment's workers listen on, scale-down waits for the longest job, the probes and
settings are ones the service has."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from rq import Queue

from contract.registry import ModelRegistry
from jobs.queues import HARD_TIMEOUT_MARGIN_S
from jobs.redis_keys import queue_name, rq_queue_key
from jobs.settings import REPO_ROOT, SECRET_FILE_NAMES, SETTING_NAMES

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
NPM = REPO_ROOT / "tests" / "npm"


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((KUBERNETES / resource).read_text())
        if doc
    ]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(deployment).get("env", [])}


def test_every_object_validates_against_the_kubernetes_and_keda_schemas(
    kustomization: dict[str, Any],
) -> None:
    node = shutil.which("node")
    assert node, "node is needed (.ci/run installs nodejs)"
    assert (NPM / "node_modules" / "kubernetes-models").is_dir(), "run `make npm-clients`"
    files = [str(KUBERNETES / r) for r in kustomization["resources"]]
    ran = subprocess.run(
        [node, str(NPM / "validate-kubernetes.mjs"), *files],
        capture_output=True, text=True, timeout=120, cwd=NPM,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    kinds = sorted({(o["kind"], o["name"]) for o in json.loads(ran.stdout)["valid"]})
    assert kinds == [
        ("Deployment", "imagegen-gateway"),
        ("Deployment", "imagegen-webhooks"),
        ("Deployment", "imagegen-worker-default"),
        ("ScaledObject", "imagegen-worker-default"),
        ("Service", "imagegen-gateway"),
        ("TriggerAuthentication", "imagegen-redis"),
    ]


def test_the_kustomization_lists_every_manifest_in_the_folder(
    kustomization: dict[str, Any],
) -> None:
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    generated = {f for g in kustomization["configMapGenerator"] for f in g.get("files", [])}
    assert set(kustomization["resources"]) | generated == files


def test_each_pools_workers_scale_on_the_queue_they_listen_on(
    objects: list[dict[str, Any]],
) -> None:
    deployments = of_kind(objects, "Deployment")
    workers = {n: d for n, d in deployments.items() if "IMAGEGEN_POOL" in env_of(d)}
    scaled = of_kind(objects, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == set(workers)
    for scaler in scaled.values():
        pool = env_of(workers[scaler["spec"]["scaleTargetRef"]["name"]])["IMAGEGEN_POOL"]
        [trigger] = scaler["spec"]["triggers"]
        assert trigger["type"] == "redis"
        # RQ's own name for the list its workers take jobs from.
        assert trigger["metadata"]["listName"] == Queue.redis_queue_namespace_prefix + queue_name(
            pool
        )
        assert trigger["metadata"]["listName"] == rq_queue_key(pool)
    registry = ModelRegistry.load(KUBERNETES / "registry.yaml")
    served = {env_of(d)["IMAGEGEN_POOL"] for d in workers.values()}
    assert set(registry.pools()) <= served, "a registered model's pool has no workers"


def test_scale_down_lets_the_longest_job_finish(
    objects: list[dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    [settings] = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "imagegen-settings"
    ]
    longest = int(dict(s.split("=", 1) for s in settings["literals"])["IMAGEGEN_MAX_JOB_TIMEOUT_S"])
    for name, deployment in of_kind(objects, "Deployment").items():
        if "IMAGEGEN_POOL" in env_of(deployment):
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > longest + HARD_TIMEOUT_MARGIN_S, name
            assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_probes_and_settings_are_ones_the_service_has(
    objects: list[dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    known = SETTING_NAMES | SECRET_FILE_NAMES | {"REDIS_URL"}
    [settings] = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "imagegen-settings"
    ]
    named = {s.split("=", 1)[0] for s in settings["literals"]}
    for deployment in of_kind(objects, "Deployment").values():
        named |= {n for n in env_of(deployment) if n.startswith(("IMAGEGEN_", "REDIS_"))}
        probes = [container(deployment).get(p) for p in ("livenessProbe", "readinessProbe")]
        for probe in filter(None, probes):
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] in ("/healthz", "/readyz")
            else:
                assert probe["exec"]["command"][:3] == ["python", "-m", "workers.healthcheck"]
    assert named - known == set()
    gateway = env_of(of_kind(objects, "Deployment")["imagegen-gateway"])
    assert gateway["IMAGEGEN_PUBLISHED_ADDRESS"] == "0.0.0.0"  # so open mode refuses to start
    assert Path(gateway["IMAGEGEN_API_KEYS_FILE"]).parent.as_posix() == "/run/secrets/imagegen"
