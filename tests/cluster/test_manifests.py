"""deploy/: the Kubernetes manifests and the image are checked against the code they deploy.

Every object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown or
misspelt field fails), the RayCluster's pod templates too; the commands in the pods are real ``hangar``
subcommands whose every flag the installed CLI's ``--help`` lists; every environment variable is a setting Hangar
reads (config.py), a variable Ray reads (found in Ray's own package) or one the manifests use themselves; names,
ports and keys that refer to each other (Services, Secrets, ConfigMap, RAY_ADDRESS, the database URL) agree.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hangar.config import Settings
from tests.support.ray_cluster import HEALTH_CHECKS
from tests.support.server import HANGAR_BIN

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
KUBE_VERSION = "1.32"
EXPECTED_KINDS = {
    ("v1", "Namespace"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "StatefulSet"),
    ("ray.io/v1", "RayCluster"),
}
# RayCluster fields (KubeRay ray.io/v1) the manifest may use: the CRD is not vendored, so its shape is checked here
RAYCLUSTER_SPEC = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}
# variables the pods define for their own use (each must be used: see test_env_vars_are_read_by_someone)
OWN_VARS = {"POD_IP", "POD_NAME", "POSTGRES_PASSWORD"}
AWS_CHAIN = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # botocore's credential chain (node_versions.py)
POSTGRES_IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA"}


def load_all() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBE.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


OBJECTS = [doc for doc in load_all() if doc["kind"] != "Kustomization"]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [o for o in OBJECTS if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def ray_cluster() -> dict[str, Any]:
    return one("RayCluster")


def pod_templates() -> dict[str, dict[str, Any]]:
    """Every pod template by role: ``gateway`` (Ray head), ``node`` (Ray workers), ``postgres``."""
    spec = ray_cluster()["spec"]
    [workers] = spec["workerGroupSpecs"]
    return {
        "gateway": spec["headGroupSpec"]["template"],
        "node": workers["template"],
        "postgres": one("StatefulSet")["spec"]["template"],
    }


def hangar_containers() -> dict[str, dict[str, Any]]:
    return {role: t["spec"]["containers"][0] for role, t in pod_templates().items() if role != "postgres"}


def shell_line(container: dict[str, Any]) -> str:
    assert container["command"][-3:] == ["/bin/bash", "-lc", "--"], container["command"]
    [line] = container["args"]
    return str(line)


def hangar_argv(container: dict[str, Any]) -> list[str]:
    """The ``hangar ...`` command the pod's shell line ends by exec'ing, split as bash would (quotes removed)."""
    line = shell_line(container)
    head, sep, command = line.partition("&& exec hangar ")
    assert sep, f"the shell line does not end by exec'ing hangar: {line}"
    assert "${KUBERAY_GEN_RAY_START_CMD//--block/}" in head, "Ray must be started first, without --block"
    return ["hangar", *shlex.split(command)]


@functools.cache
def cli_flags(subcommand: str) -> frozenset[str]:
    """The flags the installed ``hangar SUBCOMMAND --help`` lists."""
    env = {**os.environ, "COLUMNS": "300", "TERM": "dumb", "NO_COLOR": "1"}
    done = subprocess.run([str(HANGAR_BIN), subcommand, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z-]*", done.stdout))


def env_of(container: dict[str, Any]) -> list[dict[str, Any]]:
    return list(container.get("env", []))


def settings_keys() -> dict[str, str]:
    return one("ConfigMap", "hangar-settings")["data"]


@functools.cache
def ray_source_text() -> str:
    """Ray's Python sources that read its environment variables (and its C++ config names), to look names up in."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        pytest.skip("Ray is not installed (pip install -e '.[cluster]')")
    ray_dir = Path(spec.origin).parent
    files = [*(ray_dir / "_private").rglob("*.py"), *(ray_dir / "_common").rglob("*.py"), ray_dir / "exceptions.py"]
    files.append(ray_dir / "includes" / "ray_config.pxd")
    return "\n".join(path.read_text(errors="replace") for path in files if path.exists())


def test_every_file_parses_and_kinds_are_the_expected_ones() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in OBJECTS}
    assert kinds == EXPECTED_KINDS
    assert {o["metadata"]["name"] for o in OBJECTS if o["kind"] == "Secret"} == {"hangar-ray-token", "hangar-postgres"}
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert all(o["metadata"].get("namespace") in (None, "hangar") for o in OBJECTS)
    assert kustomization["namespace"] == one("Namespace")["metadata"]["name"] == "hangar"


def test_objects_and_pod_templates_match_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for obj in OBJECTS:
        if obj["kind"] != "RayCluster":
            kv.validate(obj, KUBE_VERSION, strict=True)
    for role, template in pod_templates().items():
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role}, "template": template}
        kv.validate(wrapped, KUBE_VERSION, strict=True)


def test_raycluster_shape() -> None:
    cluster = ray_cluster()
    spec = cluster["spec"]
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert set(spec) <= RAYCLUSTER_SPEC and set(spec["headGroupSpec"]) <= HEAD_GROUP
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for params in [spec["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"] for g in spec["workerGroupSpecs"])]:
        assert all(isinstance(v, str) for v in params.values()), "KubeRay wants every rayStartParams value a string"
    ray = pytest.importorskip("ray")
    assert spec["rayVersion"] == ray.__version__, "the image installs the Ray the cluster extra pins"


def test_pod_commands_are_real_hangar_subcommands_with_real_flags() -> None:
    containers = hangar_containers()
    for role, subcommand in (("gateway", "serve"), ("node", "node")):
        argv = hangar_argv(containers[role])
        assert argv[1] == subcommand
        flags = {arg.split("=", 1)[0] for arg in argv[2:] if arg.startswith("--")}
        assert flags, argv
        assert flags <= cli_flags(subcommand), flags - cli_flags(subcommand)
        bash = subprocess.run(["bash", "-n", "-c", shell_line(containers[role])], capture_output=True, text=True)
        assert bash.returncode == 0, bash.stderr
    gateway = hangar_argv(containers["gateway"])
    assert "--cluster" in gateway and "--data-dir" in gateway
    node = hangar_argv(containers["node"])
    assert {"--data-dir", "--database-url", "--gateway", "--listen"} <= set(node), "hangar node's required flags"
    # the worker's command is the image's cgroup entrypoint, which then runs the same shell line
    assert containers["node"]["command"][0] == "hangar-node-entrypoint"
    assert "/usr/local/bin/hangar-node-entrypoint" in (DEPLOY / "Dockerfile").read_text()


def test_env_vars_are_settings_or_read_by_ray() -> None:
    settings = set(Settings.model_fields)
    names = set(settings_keys())
    for container in hangar_containers().values():
        names |= {e["name"] for e in env_of(container)}
        assert [r["configMapRef"]["name"] for r in container["envFrom"]] == ["hangar-settings"]
    for name in sorted(names):
        if name.startswith("HANGAR_"):
            assert name.removeprefix("HANGAR_").lower() in settings, f"{name} is no setting of config.py"
        elif name.startswith("RAY_"):
            # RAY_<config> variables are Ray's C++ config names (ray_config.pxd); the others its Python reads
            key = name if name.isupper() else name.removeprefix("RAY_")
            assert key in ray_source_text(), f"Ray does not read {name}"
        else:
            assert name in OWN_VARS | AWS_CHAIN, f"{name}: who reads it?"
    assert set(HEALTH_CHECKS) <= {e["name"] for e in env_of(hangar_containers()["gateway"])}
    postgres = pod_templates()["postgres"]["spec"]["containers"][0]
    assert {e["name"] for e in env_of(postgres)} <= POSTGRES_IMAGE_VARS


def test_env_vars_are_read_by_someone() -> None:
    for container in hangar_containers().values():
        line = shell_line(container)
        defined: list[str] = []
        for entry in env_of(container):
            for ref in re.findall(r"\$\(([A-Z_]+)\)", str(entry.get("value", ""))):
                assert ref in defined, f"{entry['name']} uses $({ref}) before it is defined"
            defined.append(entry["name"])
        own = [n for n in defined if n in OWN_VARS]
        values = " ".join(str(e.get("value", "")) for e in env_of(container))
        for name in own:
            assert f"${name}" in line or f"$({name})" in values, f"{name} is defined and never used"


def test_secret_and_configmap_references_exist() -> None:
    secrets = {o["metadata"]["name"]: o for o in OBJECTS if o["kind"] == "Secret"}
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for template in pod_templates().values():
        for container in template["spec"]["containers"]:
            for entry in env_of(container):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                if ref["name"] in secrets:
                    assert ref["key"] in secrets[ref["name"]]["stringData"]
                else:  # made by the operator after the gateway is up: must be optional and documented
                    assert ref.get("optional") is True and ref["name"] in docs and ref["key"] in docs
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
            if "persistentVolumeClaim" in volume:
                one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    token_mount = {
        str(Path(m["mountPath"]) / "token")
        for c in hangar_containers().values()
        for m in c["volumeMounts"]
        if m["name"] == "ray-token"
    }
    assert token_mount == {settings_keys()["RAY_AUTH_TOKEN_PATH"]}
    assert "token" in secrets["hangar-ray-token"]["stringData"]
    assert settings_keys()["RAY_AUTH_MODE"] == "token"


def ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def test_services_ports_and_addresses_agree() -> None:
    containers = hangar_containers()
    cluster_name = ray_cluster()["metadata"]["name"]
    gateway_svc = one("Service", "hangar-gateway")
    assert gateway_svc["spec"]["selector"] == {"ray.io/cluster": cluster_name, "ray.io/node-type": "head"}
    [svc_port] = gateway_svc["spec"]["ports"]
    gateway_ports = ports(containers["gateway"])
    assert svc_port["targetPort"] in gateway_ports
    serve = hangar_argv(containers["gateway"])
    assert int(serve[serve.index("--port") + 1]) == gateway_ports[svc_port["targetPort"]] == svc_port["port"]
    assert serve[serve.index("--host") + 1] == "0.0.0.0"

    node = hangar_argv(containers["node"])
    listen_host, _, listen_port = node[node.index("--listen") + 1].rpartition(":")
    assert listen_host == "$POD_IP", "the node must listen on (and advertise) an address gateways can reach"
    assert int(listen_port) == ports(containers["node"])["node-api"]
    gateway_url = urlsplit(node[node.index("--gateway") + 1])
    assert (gateway_url.hostname, gateway_url.port) == ("hangar-gateway", svc_port["port"])
    assert node[node.index("--database-url") + 1] == "$HANGAR_DATABASE_URL"

    env = {role: {e["name"]: e.get("value") for e in env_of(c)} for role, c in containers.items()}
    assert env["node"]["RAY_ADDRESS"] == f"{cluster_name}-head-svc:{ports(containers['gateway'])['gcs']}"
    assert env["gateway"]["RAY_ADDRESS"] == f"127.0.0.1:{ports(containers['gateway'])['gcs']}"

    postgres_svc = one("Service", "hangar-postgres")
    postgres = pod_templates()["postgres"]["spec"]["containers"][0]
    [pg_port] = postgres_svc["spec"]["ports"]
    assert ports(postgres)[pg_port["targetPort"]] == 5432
    assert postgres_svc["spec"]["selector"].items() <= pod_templates()["postgres"]["metadata"]["labels"].items()
    pg_env = {e["name"]: e.get("value") for e in env_of(postgres)}
    for role in ("gateway", "node"):
        url = urlsplit(env[role]["HANGAR_DATABASE_URL"])
        assert url.scheme == "postgresql+psycopg"
        assert (url.hostname, url.port) == (postgres_svc["metadata"]["name"], pg_port["port"])
        assert (url.username, url.path.lstrip("/")) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"])
    for role, container in containers.items():
        for probe in ("readinessProbe", "livenessProbe"):
            check = container[probe].get("httpGet") or container[probe]["tcpSocket"]
            assert check["port"] in ports(container), (role, probe)


def test_images_and_privileges() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    [image] = kustomization["images"]
    assert {c["image"] for c in hangar_containers().values()} == {image["name"]}
    assert hangar_containers()["node"]["securityContext"] == {"privileged": True}
    gateway_security = hangar_containers()["gateway"]["securityContext"]
    assert not gateway_security.get("privileged") and gateway_security["allowPrivilegeEscalation"] is False
    assert one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_dockerfile_and_entrypoint() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    extras = re.search(r"'/src/hangar\[([a-z,]+)\]'", dockerfile)
    assert extras is not None
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in extras.group(1).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.MULTILINE), f"no extra {extra} in pyproject.toml"
    assert "bash /tmp/system-deps runtime" in dockerfile  # the same Debian packages as `make run`
    entrypoint = DEPLOY / "node-entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    assert subprocess.run(["bash", "-n", str(entrypoint)], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (Debian package kubectl)")
def test_kustomize_builds() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    objects = [o for o in yaml.safe_load_all(built.stdout) if o]
    assert len(objects) == len(OBJECTS)
    assert all(o["metadata"].get("namespace") == "hangar" for o in objects if o["kind"] != "Namespace")
    [cluster] = [o for o in objects if o["kind"] == "RayCluster"]
    images = {g["template"]["spec"]["containers"][0]["image"] for g in cluster["spec"]["workerGroupSpecs"]}
    assert images == {"hangar:dev"}
