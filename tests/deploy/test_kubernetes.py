"""deploy/kubernetes: every overlay renders (`kubectl kustomize`), every object validates
strictly against the Kubernetes API of KUBERNETES_VERSION, and the policy holds: non-root,
read-only root file system, no privilege escalation, every capability dropped, the runtime
seccomp profile, memory requests and limits, /healthz probes on metrics_listen for the
daemon, egress only to DNS, 3306 and 443, Azure workload identity, and no secret value
anywhere (secrets come from Secrets the operator creates, named in SECRETS)."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import sealdump
from tests.deploy.tools import DEPLOY, REPO, tool

KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.32.0"  # the oldest minor version these manifests support
SECRETS = {"sealdump-db", "sealdump-history"}  # created by the operator (docs/operations.md)
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
SECRET_KEYS = re.compile(r"(password|passwd|secret|token|account_?key|connection_?string)$")
SECRET_TEXT = re.compile(
    r"AccountKey=|SharedAccessSignature=|[?&]sig=|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"://[^/\s:@]+:[^/\s@]+@",  # user:password@ in a URL
    re.IGNORECASE,
)


@functools.cache
def render(overlay: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return result.stdout, tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def objects(overlay: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [d for d in render(overlay)[1] if kind is None or d["kind"] == kind]


def pod_specs(overlay: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(kind/name, pod metadata, pod spec)`` of every workload."""
    found = []
    for obj in objects(overlay):
        if obj["kind"] not in WORKLOADS:
            continue
        template = (
            obj["spec"]["template"]
            if obj["kind"] != "CronJob"
            else (obj["spec"]["jobTemplate"]["spec"]["template"])
        )
        found.append(
            (f"{obj['kind']}/{obj['metadata']['name']}", template["metadata"], template["spec"])
        )
    return found


def config_files(overlay: str) -> dict[str, str]:
    """The files of the rendered ConfigMaps, by key (sealdump.yaml, SERVER.yaml)."""
    files: dict[str, str] = {}
    for config_map in objects(overlay, "ConfigMap"):
        files.update(config_map.get("data", {}))
    return files


def test_there_are_the_three_forms() -> None:
    assert set(OVERLAYS) >= {"single", "shared-history", "cronjob"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay: str) -> None:
    docs = objects(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_an_unknown_field() -> None:
    [deployment] = objects("single", "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay: str) -> None:
    specs = pod_specs(overlay)
    assert specs
    for where, _, spec in specs:
        pod = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, where
        assert spec.get("hostNetwork") is not True, where
        assert spec.get("hostPID") is not True, where
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container.get("securityContext", {})
            at = f"{where} {container['name']}"
            assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, at
            assert context.get("runAsUser", pod.get("runAsUser", 0)) != 0, at
            assert context.get("readOnlyRootFilesystem") is True, at
            assert context.get("allowPrivilegeEscalation") is False, at
            assert context.get("privileged", False) is False, at
            assert context["capabilities"]["drop"] == ["ALL"], at
            assert not context["capabilities"].get("add"), at
            seccomp = context.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", at
            resources = container["resources"]
            assert resources["requests"]["cpu"], at
            assert _mib(resources["limits"]["memory"]) > _mib(resources["requests"]["memory"]), at
            # readOnlyRootFilesystem: the state directory and /tmp are volumes.
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/var/lib/sealdump", "/tmp"} <= mounts, at  # noqa: S108


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_the_release_image(overlay: str) -> None:
    for where, _, spec in pod_specs(overlay):
        for container in spec["containers"]:
            assert container["image"].endswith(f":{sealdump.__version__}"), where


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if objects(o, "Deployment")])
def test_the_daemon_is_probed_on_metrics_listen(overlay: str) -> None:
    settings = yaml.safe_load(config_files(overlay)["sealdump.yaml"])
    host, _, port = settings["metrics_listen"].rpartition(":")
    # Probes and Prometheus come from outside the pod.
    assert host in {"0.0.0.0", "[::]"}  # noqa: S104
    for where, metadata, spec in pod_specs(overlay):
        [container] = spec["containers"]
        assert "run" in container["args"], where
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(port), where
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            check = container[probe]["httpGet"]
            assert (check["path"], ports.get(check["port"], check["port"])) == (
                "/healthz",
                int(port),
            )
        assert metadata["annotations"]["prometheus.io/port"] == port
        # SIGTERM lets running jobs finish for --stop-grace seconds: the pod must wait longer.
        grace = int(container["args"][container["args"].index("--stop-grace") + 1])
        assert spec["terminationGracePeriodSeconds"] > grace, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_anywhere(overlay: str) -> None:
    text, docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created by the operator"
    assert not SECRET_TEXT.search(text), SECRET_TEXT.search(text)
    for where, _, spec in pod_specs(overlay):
        for container in spec["containers"]:
            for variable in container.get("env", []):
                assert not (SECRET_KEYS.search(variable["name"].lower()) and "value" in variable), (
                    where
                )
        referenced = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert referenced <= SECRETS, where
    for name, content in config_files(overlay).items():
        _no_secret_keys(yaml.safe_load(content), name)


def _no_secret_keys(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            assert not SECRET_KEYS.search(str(key)), f"{where}: {key} holds a secret"
            _no_secret_keys(value, f"{where}: {key}")
    elif isinstance(node, list):
        for item in node:
            _no_secret_keys(item, where)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_identity(overlay: str) -> None:
    [account] = objects(overlay, "ServiceAccount")
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    for where, metadata, spec in pod_specs(overlay):
        assert metadata["labels"]["azure.workload.identity/use"] == "true", where
        assert spec["serviceAccountName"] == account["metadata"]["name"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_only_dns_mysql_and_https_out(overlay: str) -> None:
    [policy] = objects(overlay, "NetworkPolicy")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    for where, metadata, _ in pod_specs(overlay):
        assert spec["podSelector"]["matchLabels"].items() <= metadata["labels"].items(), where
    egress = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 3306), ("TCP", 443)}
    ingress = {(p["protocol"], p["port"]) for rule in spec["ingress"] for p in rule["ports"]}
    assert ingress == {("TCP", 9187)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configuration_is_valid_for_this_sealdump(overlay: str, tmp_path: Path) -> None:
    """`sealdump config validate` on the ConfigMaps, with their mount paths made local."""
    files = config_files(overlay)
    main = yaml.safe_load(files.pop("sealdump.yaml"))
    mounts = {
        m["mountPath"]: m["name"]
        for _, _, spec in pod_specs(overlay)[:1]
        for m in spec["containers"][0]["volumeMounts"]
    }
    assert mounts[main["servers_dir"]] == "servers"
    (tmp_path / "servers").mkdir()
    for name, content in files.items():
        (tmp_path / "servers" / name).write_text(content)
    main["servers_dir"] = str(tmp_path / "servers")
    (tmp_path / "sealdump.yaml").write_text(yaml.safe_dump(main))
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "sealdump"),
            "--config",
            str(tmp_path / "sealdump.yaml"),
            "config",
            "validate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_single_is_one_daemon_with_its_history_on_a_volume() -> None:
    [deployment] = objects("single", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert set(volumes["state"]) == {"name", "persistentVolumeClaim"}
    claims = {c["metadata"]["name"] for c in objects("single", "PersistentVolumeClaim")}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] in claims
    assert "history_url" not in yaml.safe_load(config_files("single")["sealdump.yaml"])


def test_shared_history_is_several_daemons_on_one_mysql_history() -> None:
    [deployment] = objects("shared-history", "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    settings = yaml.safe_load(config_files("shared-history")["sealdump.yaml"])
    assert settings["history_url"].startswith("mysql+pymysql://")
    assert settings["history_password_file"].startswith("/run/secrets/sealdump-history/")
    [budget] = objects("shared-history", "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def test_cronjobs_back_up_configured_jobs_one_at_a_time() -> None:
    files = config_files("cronjob")
    cronjobs = objects("cronjob", "CronJob")
    commands = []
    for cronjob in cronjobs:
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        commands.append(container["args"][2:])
    backups = [c[1] for c in commands if c[0] == "backup"]
    assert backups, "no backup CronJob"
    assert ["prune"] in commands
    for target in backups:
        server, _, job = target.partition("/")
        assert job in yaml.safe_load(files[f"{server}.yaml"])["jobs"], target
