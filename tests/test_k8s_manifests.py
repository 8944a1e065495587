"""deploy/k8s: every manifest validates against Kubernetes' own schemas, fits the others, and
contains no secret value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.config import Settings

K8S_DIR = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
# A recent release the schemas of kubernetes-validate cover.
K8S_VERSION = "1.34.0"
# Custom resources kubernetes-validate has no schema for, and who defines them.
KNOWN_CRDS = {("keda.sh/v1alpha1", "ScaledObject"): "KEDA"}
SECRET_NAME = "mcpq"
# Every setting that carries a credential: it must come from the Secret, never be written here.
SECRET_SETTINGS = {
    "DATABASE_URL": "database-url",
    "REDIS_URL": "redis-url",
    "MCPQ_ADMIN_TOKEN": "admin-token",
    "MCPQ_SECRET_KEYS": "secret-keys",
}
# Shapes of secret values: a Fernet key, an mcpq token, a URL with a password in it.
SECRET_SHAPES = [
    re.compile(r"[A-Za-z0-9_-]{43}="),
    re.compile(r"mcpq_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
    re.compile(r"[a-z+]+://[^\s/:@]*:[^\s/@]+@"),
]


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return loaded


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file, document) for every resource the kustomization lists."""
    return [
        (name, doc)
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text())
        if doc is not None
    ]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config_value(name: str) -> str:
    data: dict[str, str] = by_kind("ConfigMap")["mcpq-config"]["data"]
    return data[name]


def test_the_kustomization_lists_every_manifest() -> None:
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == on_disk


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[f"{n}:{d['kind']}" for n, d in documents()])
def test_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    crd = KNOWN_CRDS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        pytest.skip(
            f"{name}: {doc['kind']} ({doc['apiVersion']}) is a {crd} custom resource; "
            "kubernetes-validate only has schemas for built-in kinds"
        )
    # strict: an unknown or misspelt field fails too, not only a wrong type.
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_no_manifest_contains_a_secret() -> None:
    for name, doc in documents():
        assert doc["kind"] != "Secret", f"{name}: create the Secret outside the manifests"
        text = (K8S_DIR / name).read_text()
        for shape in SECRET_SHAPES:
            assert shape.search(text) is None, f"{name} contains something shaped like a secret"
    for setting in SECRET_SETTINGS:
        assert setting not in by_kind("ConfigMap")["mcpq-config"]["data"]


def test_credentials_come_from_the_secret() -> None:
    pods = [d["spec"]["template"] for d in (*by_kind("Deployment").values(), *by_kind("Job").values())]
    assert len(pods) == 3  # API, worker, migrations
    for pod in pods:
        for env in pod["spec"]["containers"][0]["env"]:
            if env["name"] in SECRET_SETTINGS:
                assert "value" not in env, env["name"]
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref == {"name": SECRET_NAME, "key": SECRET_SETTINGS[env["name"]]}


def test_api_probes_migrations_and_scaling() -> None:
    api = by_kind("Deployment")["mcpq-api"]
    api_container = container(api)
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/ready"
    # The Job migrates; the API must not run them at startup as well.
    assert config_value("MCPQ_RUN_MIGRATIONS") == "false"
    assert container(by_kind("Job")["mcpq-migrate"])["command"] == [
        "python",
        "-m",
        "shared.migrate",
    ]
    service = by_kind("Service")["mcpq-api"]
    assert service["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"]
    hpa = by_kind("HorizontalPodAutoscaler")["mcpq-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mcpq-api"
    assert "cpu" in api_container["resources"]["requests"]  # CPU utilisation needs a request


def test_workers_drain_and_scale_on_the_queue() -> None:
    worker = by_kind("Deployment")["mcpq-worker"]
    assert container(worker)["command"] == ["python", "-m", "workers"]
    assert container(worker)["livenessProbe"]["exec"]["command"] == ["python", "-m", "workers", "--check"]
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config_value("MCPQ_WORKER_DRAIN_S")) + 5
    scaled = by_kind("ScaledObject")["mcpq-worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "mcpq-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "mcpq_queue_depth" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["threshold"]) > 0


def test_every_configured_setting_exists() -> None:
    """A misspelt variable would be ignored silently (settings ignore unknown names)."""
    known = {f"MCPQ_{name.upper()}" for name in Settings.model_fields}
    assert set(by_kind("ConfigMap")["mcpq-config"]["data"]) <= known
