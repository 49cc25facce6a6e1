"""deploy/k8s/: every overlay rendered by a real kustomize, validated against the Kubernetes
schemas, and held to the invariants that tie it to the rest of deploy/.

Rendering uses kustomize v5 (`kubectl kustomize`, or a standalone `kustomize`); the schemas are
the ones `kubernetes-validate` (PyPI) bundles, in strict mode, so a misspelt field fails too.
No cluster is involved: what a cluster would still decide (scheduling, the images, Redis) is
listed in deploy/k8s/README.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from idrserve.settings import Settings, load_settings

from .test_deploy_files import ENV_EXAMPLE, env_example

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("prod", "staging", "test")
# The oldest Kubernetes release the manifests promise to fit (README), and the newest bundled.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
REDIS_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "redis+sentinel://")

Doc = dict[str, Any]


def kustomize_command() -> list[str]:
    """kustomize v5: kubectl's built-in one, or a standalone binary."""
    if shutil.which("kustomize"):
        return ["kustomize", "build", "--load-restrictor", "LoadRestrictionsNone"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", "--load-restrictor=LoadRestrictionsNone"]
    pytest.fail(
        "neither kustomize nor kubectl (with its built-in kustomize) is on PATH: "
        "the Kubernetes manifest tests render every overlay with a real kustomize"
    )


def render(path: Path) -> list[Doc]:
    done = subprocess.run(
        [*kustomize_command(), str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def config_map(docs: list[Doc], prefix: str) -> Doc:
    """A generated ConfigMap, by its name without kustomize's content hash."""
    found = [
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    assert len(found) == 1, prefix
    return found[0]


def container(workload: Doc, name: str) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def effective_env(docs: list[Doc]) -> dict[str, str]:
    """The idrserve container's environment as the kubelet builds it: envFrom sources in order
    (a later one wins), then `env`. The optional Secret adds nothing here."""
    pod = container(one(docs, "Deployment", "idrserve"), "idrserve")
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in pod["envFrom"]:
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
        else:
            assert source["secretRef"].get("optional") is True, source
    env.update({e["name"]: e["value"] for e in pod.get("env", [])})
    return env


def pod_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What idrserve makes of that environment alone (unknown names or bad values raise)."""
    for var in list(os.environ):
        if var.startswith("IDRSERVE_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return load_settings()


def test_every_overlay_renders_and_fits_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]],
) -> None:
    for name, docs in rendered.items():
        kinds = sorted(d["kind"] for d in docs)
        expected = {
            "Namespace": 1,
            "ConfigMap": 3,
            "Deployment": 1,
            "StatefulSet": 1,
            "Service": 3,
            "HorizontalPodAutoscaler": 1,
            "PodDisruptionBudget": 2,
        }
        assert kinds == sorted(k for k, n in expected.items() for _ in range(n)), name
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == f"idrserve-{name}", doc["metadata"]
            for version in KUBE_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_a_misspelt_field(rendered: dict[str, list[Doc]]) -> None:
    """The check above only means something if strict validation catches typos."""
    deployment = one(rendered["prod"], "Deployment", "idrserve")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


def test_settings_configmap_is_the_env_example(rendered: dict[str, list[Doc]]) -> None:
    active = {name: value for name, value, on in env_example() if on}
    assert ENV_EXAMPLE.is_file()
    for docs in rendered.values():
        assert config_map(docs, "idrserve-env")["data"] == active


def test_effective_settings_load_and_suit_a_pod(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, docs in rendered.items():
        env = effective_env(docs)
        settings = pod_settings(env, monkeypatch)
        assert settings.server.host == "0.0.0.0", name
        assert settings.cache.redis_url is not None
        assert settings.cache.redis_url.startswith(REDIS_SCHEMES), name
        assert "127.0.0.1" not in settings.cache.redis_url, name
        assert "@" not in settings.cache.redis_url, f"{name}: a password belongs in the Secret"
        assert str(settings.source.zarr_root).startswith("s3://"), name

        deployment = one(docs, "Deployment", "idrserve")
        pod_spec = deployment["spec"]["template"]["spec"]
        idrserve = container(deployment, "idrserve")
        assert idrserve["ports"][0]["containerPort"] == settings.server.port
        # One worker process per requested core.
        assert settings.server.workers == int(idrserve["resources"]["requests"]["cpu"]), name
        # Every path idrserve writes is a mounted volume (the root filesystem is read-only),
        # and the disk tier's budget fits its emptyDir.
        assert idrserve["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in idrserve["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        for path in (
            str(settings.cache.dir),
            str(settings.source.catalog_index_dir),
            env["NUMBA_CACHE_DIR"].rsplit("/", 1)[0],
        ):
            assert path in mounts, f"{name}: {path} is not a volume"
        cache_volume = volumes[mounts[str(settings.cache.dir)]]["emptyDir"]
        assert settings.cache.dir_max_bytes < gib(cache_volume["sizeLimit"]), name


def gib(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert m, quantity
    return int(m.group(1)) << (20 if m.group(2) == "Mi" else 30)


def test_probes_and_graceful_stop_match_the_drain_settings(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, docs in rendered.items():
        server = pod_settings(effective_env(docs), monkeypatch).server
        deployment = one(docs, "Deployment", "idrserve")
        idrserve = container(deployment, "idrserve")
        assert idrserve["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert idrserve["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert idrserve["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # /readyz turns 503 as soon as the drain starts: a probe must notice within the grace.
        readiness = idrserve["readinessProbe"]
        assert readiness["periodSeconds"] * readiness["failureThreshold"] <= max(
            server.drain_grace_s, 2
        )
        pre_stop = idrserve["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep", pre_stop
        assert server.drain_grace_s > 0, f"{name}: pods need a drain grace"
        needed = float(pre_stop[1]) + server.drain_grace_s + server.shutdown_timeout_s
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert needed < grace <= needed + 10, f"{name}: {grace} s for {needed} s of drain"
        # A rollout never takes a ready pod away before its successor is ready.
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_scaling_objects_select_the_pods(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        for workload_kind, workload_name, service in (
            ("Deployment", "idrserve", "idrserve"),
            ("StatefulSet", "idrserve-nginx", "idrserve-nginx"),
        ):
            workload = one(docs, workload_kind, workload_name)
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert labels.items() >= workload["spec"]["selector"]["matchLabels"].items()
            assert labels.items() >= one(docs, "Service", service)["spec"]["selector"].items()
            pdb = one(docs, "PodDisruptionBudget", workload_name)
            assert labels.items() >= pdb["spec"]["selector"]["matchLabels"].items()
            assert pdb["spec"]["maxUnavailable"] == 1
            anti = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            assert term["topologyKey"] == "kubernetes.io/hostname"
            assert labels.items() >= term["labelSelector"]["matchLabels"].items()
            for c in workload["spec"]["template"]["spec"]["containers"]:
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (name, c["name"])
                assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (name, c["name"])
        hpa = one(docs, "HorizontalPodAutoscaler", "idrserve")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "idrserve",
        }
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    prod = one(rendered["prod"], "HorizontalPodAutoscaler", "idrserve")["spec"]
    test = one(rendered["test"], "HorizontalPodAutoscaler", "idrserve")["spec"]
    assert prod["minReplicas"] > test["minReplicas"]


def test_nginx_tier_runs_the_shipped_config(rendered: dict[str, list[Doc]]) -> None:
    shipped = (ROOT / "deploy" / "nginx" / "idrserve.conf").read_text()
    cache_paths = re.findall(r"proxy_cache_path (\S+)/\w+ ", shipped)
    assert cache_paths
    for name, docs in rendered.items():
        assert config_map(docs, "idrserve-nginx")["data"] == {"idrserve.conf": shipped}, name
        nginx = one(docs, "StatefulSet", "idrserve-nginx")
        pod = container(nginx, "nginx")
        mounts = {m["name"]: m["mountPath"] for m in pod["volumeMounts"]}
        # The proxy cache directory of idrserve.conf is the StatefulSet's per-replica volume.
        claims = {t["metadata"]["name"] for t in nginx["spec"]["volumeClaimTemplates"]}
        assert set(cache_paths) == {mounts["proxy-cache"]}
        assert "proxy-cache" in claims
        # The start command rewrites the upstream literals the file still has, to the
        # idrserve Service's name and port.
        command = " ".join(pod["command"])
        for literal in ("127.0.0.1:8080", "127.0.0.1:8000"):
            assert literal in shipped
            assert literal.replace(".", r"\.") in command
        service = one(docs, "Service", "idrserve")
        assert f"/idrserve:{service['spec']['ports'][0]['port']}/" in command
        assert mounts["nginx-conf"] + "/idrserve.conf" in command
        assert "nginx -t" in command
