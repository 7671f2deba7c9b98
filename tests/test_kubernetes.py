"""The Kubernetes kustomize base (deploy/kubernetes/): rendered by the real kubectl, validated
against the Kubernetes schemas, and held to what the daemon and the rules say.

kubectl comes with the machine image or Debian's `kubernetes-client` (CI's .ci/run installs it
where it is missing; elsewhere a missing kubectl skips, see ``deployment_tool``). The schemas
ship inside `kubernetes-validate` (dev extra), so nothing is fetched.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from monitor import __version__
from monitor.atlas import ApiKey, ServiceAccount
from monitor.config import (
    CLIENT_ID_ENV,
    CLIENT_SECRET_FILE_ENV,
    DEFAULT_PORT,
    PRIVATE_KEY_FILE_ENV,
    PUBLIC_KEY_ENV,
    Settings,
    load_settings,
    parse_config,
)
from monitor.server import create_app
from tests.helpers import PRIVATE_KEY, PUBLIC_KEY, deployment_tool, only, run_promtool, settings_for

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "deploy" / "kubernetes"
GENERATOR = BASE / "prometheusrule.py"
PROMETHEUS_RULE = BASE / "prometheusrule.yaml"
RULES_FILE = REPO / "config" / "prometheus" / "rules" / "atlas-endpoint-monitor.rules.yml"
DEPLOYING_DOC = REPO / "docs" / "deploying.md"
EXAMPLE_CONFIG = REPO / "config" / "example.yaml"
REGENERATE = "run `make kubernetes` and commit the result"

NAME = "atlas-endpoint-monitor"
SELECTOR = {"app.kubernetes.io/name": NAME}
# The contract's name (monitor.config.STATE_PATH_ENV where the state store exists).
STATE_PATH_ENV = "ATLAS_MONITOR_STATE_PATH"
CORE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
    "NetworkPolicy",
}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The oldest and newest Kubernetes minor versions whose schemas the pinned kubernetes-validate
# ships and that we promise the base works on.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# What the credentials Secret holds in the tests (the real one is created by the operator).
SECRET_DATA = {
    "public-api-key": PUBLIC_KEY,
    "private-api-key": PRIVATE_KEY,
    "client-id": "mdb_sa_id_0123456789abcdef01234567",
    "client-secret": "mdb_sa_sk_test-client-secret",
}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY`: what `kubectl apply -k` would send."""
    completed = subprocess.run(
        [deployment_tool("kubectl", "kubernetes-client"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"kubectl kustomize failed:\n{completed.stderr}"
    return [document for document in yaml.safe_load_all(completed.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(BASE)


def one(rendered: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [document for document in rendered if document["kind"] == kind]
    return found


def container(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = pod_spec(rendered)["containers"]
    return found


def pod_spec(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(rendered, "Deployment")["spec"]["template"]["spec"]
    return spec


def base_config(rendered: list[dict[str, Any]]) -> str:
    """The daemon's config file as the pod sees it: the ConfigMap's only key."""
    ((key, text),) = one(rendered, "ConfigMap")["data"].items()
    assert config_path(rendered).name == key
    return str(text)


def config_path(rendered: list[dict[str, Any]]) -> Path:
    args = container(rendered)["args"]
    assert args == only("CMD").exec_form(), "the image's command, spelt out"
    assert args[:2] == ["run", "--config"], args
    return Path(args[2])


def mounts_by_volume(rendered: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], Path]]:
    """Volume name -> (its volume entry, where the container mounts it)."""
    volumes = {volume["name"]: volume for volume in pod_spec(rendered)["volumes"]}
    return {
        mount["name"]: (volumes[mount["name"]], Path(mount["mountPath"]))
        for mount in container(rendered)["volumeMounts"]
    }


def volume_holding(rendered: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """The volume a path in the container lies on (every path the daemon uses must lie on one:
    the root file system is read-only)."""
    holding = [
        volume
        for volume, mount_path in mounts_by_volume(rendered).values()
        if path.is_relative_to(mount_path)
    ]
    assert len(holding) == 1, f"{path} is on {len(holding)} volumes"
    return holding[0]


def container_env(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(rendered)["env"]}


def labels_of(document: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = document["metadata"].get("labels", {})
    return labels


# --- rendering and schemas ---------------------------------------------------------------


def test_the_base_renders_every_kind_and_no_secret(rendered: list[dict[str, Any]]) -> None:
    kinds = [document["kind"] for document in rendered]

    assert sorted(kinds) == sorted(CORE_KINDS | CUSTOM_KINDS)
    assert "Secret" not in kinds
    for document in rendered:
        assert labels_of(document).items() >= SELECTOR.items(), document["metadata"]["name"]
        assert "namespace" not in document["metadata"], "the namespace is the operator's choice"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_core_kinds_validate_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]], version: str
) -> None:
    for document in rendered:
        if document["kind"] in CORE_KINDS:
            # strict: a misspelt or misplaced field is an error, not ignored by the API server.
            kubernetes_validate.validate(document, version, strict=True)


def test_the_service_monitor_scrapes_the_service_as_the_job_the_rules_expect(
    rendered: list[dict[str, Any]],
) -> None:
    service = one(rendered, "Service")
    monitor = one(rendered, "ServiceMonitor")
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    (expected_job,) = set(re.findall(r'\bup\{job="([^"]+)"\}', RULES_FILE.read_text()))

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(spec) == {"jobLabel", "selector", "endpoints"}
    assert spec["selector"] == {"matchLabels": SELECTOR}
    assert labels_of(service).items() >= SELECTOR.items()
    assert labels_of(service)[spec["jobLabel"]] == expected_job
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}


def test_the_prometheus_rule_holds_exactly_the_groups_of_the_rule_files(
    rendered: list[dict[str, Any]],
) -> None:
    rule = one(rendered, "PrometheusRule")

    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_the_prometheus_rule_groups_pass_promtool(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    rules = tmp_path / "prometheusrule-groups.yml"
    rules.write_text(yaml.safe_dump(one(rendered, "PrometheusRule")["spec"]), encoding="utf-8")

    output = run_promtool("check", "rules", str(rules))

    assert "SUCCESS" in output


def test_the_committed_prometheus_rule_is_what_the_generator_prints() -> None:
    completed = subprocess.run(
        [sys.executable, str(GENERATOR)], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, f"{GENERATOR.name} failed:\n{completed.stderr}"
    committed = PROMETHEUS_RULE.read_text(encoding="utf-8")
    if completed.stdout != committed:
        diff = difflib.unified_diff(
            committed.splitlines(),
            completed.stdout.splitlines(),
            f"committed {PROMETHEUS_RULE.relative_to(REPO)}",
            f"generated by {GENERATOR.relative_to(REPO)}",
            lineterm="",
        )
        excerpt = "\n".join(list(diff)[:60])
        pytest.fail(
            f"{PROMETHEUS_RULE.name} is out of date: {REGENERATE}.\n{excerpt}", pytrace=False
        )


# --- the Deployment agrees with the daemon -----------------------------------------------


def test_the_container_port_is_where_the_daemon_listens_on_the_base_config(
    rendered: list[dict[str, Any]],
) -> None:
    server = parse_config(yaml.safe_load(base_config(rendered)), {}).server
    (port,) = container(rendered)["ports"]
    (service_port,) = one(rendered, "Service")["spec"]["ports"]

    assert port["containerPort"] == server.port == DEFAULT_PORT
    assert server.host in {"0.0.0.0", "::"}, "the kubelet and Prometheus come from outside"
    assert service_port["targetPort"] == port["name"]
    assert service_port["port"] == DEFAULT_PORT


def test_the_probes_ask_the_daemons_health_and_readiness_paths_on_its_port(
    rendered: list[dict[str, Any]],
) -> None:
    app = create_app(settings_for("http://127.0.0.1:1"))
    get_routes = {route.resource.canonical for route in app.router.routes() if route.resource}
    probes = {
        kind: container(rendered)[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")
    }
    (port,) = container(rendered)["ports"]

    # Liveness must not depend on Atlas (a restart cures nothing there); readiness may.
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in get_routes
        assert probe["port"] == port["name"]
        assert probe.get("scheme", "HTTP") == "HTTP"


def test_the_deployment_environment_gives_the_daemon_its_credentials_from_the_secret(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The base config with the Deployment's env, every path remapped to a directory standing
    in for its volume, loads as the daemon loads it: with the Secret's key pair."""
    env = container_env(rendered)
    secret_volume = volume_holding(rendered, Path(env[PRIVATE_KEY_FILE_ENV]["value"]))
    secret_name = secret_volume["secret"]["secretName"]

    assert env[PUBLIC_KEY_ENV]["valueFrom"]["secretKeyRef"]["name"] == secret_name
    assert "value" not in env[PUBLIC_KEY_ENV], "no credential in the manifest"

    settings = settings_in_pod(rendered, tmp_path)

    assert settings.credentials.login == ApiKey(PUBLIC_KEY, settings.credentials.secret)
    assert settings.credentials.secret.get_secret_value() == PRIVATE_KEY
    assert PRIVATE_KEY_FILE_ENV in settings.credentials.secret_source


def settings_in_pod(rendered: list[dict[str, Any]], root: Path) -> Settings:
    """What the daemon loads from the rendered config and the Deployment's environment."""
    environ = dict(remapped_environment(rendered, root))
    config_file = root / "config" / config_path(rendered).name
    config_file.parent.mkdir()
    config_file.write_text(base_config(rendered), encoding="utf-8")
    return load_settings(config_file, environ)


def remapped_environment(rendered: list[dict[str, Any]], root: Path) -> Iterator[tuple[str, str]]:
    """The container's env with secrets resolved from SECRET_DATA and paths on volumes moved
    under ``root`` (a secret volume's items written there as the kubelet would)."""
    mounts = mounts_by_volume(rendered)
    for name, entry in container_env(rendered).items():
        if "valueFrom" in entry:
            yield name, SECRET_DATA[entry["valueFrom"]["secretKeyRef"]["key"]]
            continue
        path = Path(entry["value"])
        if not path.is_absolute():
            yield name, entry["value"]
            continue
        volume = volume_holding(rendered, path)
        local = root / volume["name"]
        local.mkdir(exist_ok=True)
        for item in volume.get("secret", {}).get("items", []):
            (local / item["path"]).write_text(SECRET_DATA[item["key"]], encoding="utf-8")
        yield name, str(local / path.relative_to(mounts[volume["name"]][1]))


def test_the_state_file_is_on_the_claimed_volume_and_pods_never_share_it(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = one(rendered, "Deployment")
    state_path = Path(container_env(rendered)[STATE_PATH_ENV]["value"])
    claim = volume_holding(rendered, state_path)["persistentVolumeClaim"]["claimName"]

    assert claim == one(rendered, "PersistentVolumeClaim")["metadata"]["name"]
    assert one(rendered, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_config_and_the_secret_are_mounted_read_only(rendered: list[dict[str, Any]]) -> None:
    env = container_env(rendered)
    read_only = {
        mount["name"] for mount in container(rendered)["volumeMounts"] if mount.get("readOnly")
    }
    config_volume = volume_holding(rendered, config_path(rendered))
    secret_volume = volume_holding(rendered, Path(env[PRIVATE_KEY_FILE_ENV]["value"]))

    assert config_volume["configMap"]["name"] == one(rendered, "ConfigMap")["metadata"]["name"]
    assert {config_volume["name"], secret_volume["name"]} <= read_only
    # Group read only, for fsGroup: the kubelet owns the file to root:fsGroup.
    assert secret_volume["secret"]["defaultMode"] == 0o440


def test_the_pod_runs_restricted_as_the_images_user(rendered: list[dict[str, Any]]) -> None:
    pod = pod_spec(rendered)
    pod_security = pod["securityContext"]
    container_security = container(rendered)["securityContext"]

    image_user, image_group = (int(id_) for id_ in only("USER").arguments.split(":"))

    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (image_user, image_group)
    assert pod_security["fsGroup"] == image_group
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container_security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one(rendered, "ServiceAccount")["metadata"]["name"]
    assert one(rendered, "ServiceAccount")["automountServiceAccountToken"] is False


def test_the_image_is_this_release_and_resources_are_bounded(
    rendered: list[dict[str, Any]],
) -> None:
    resources = container(rendered)["resources"]

    assert container(rendered)["image"] == f"{NAME}:{__version__}"
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert quantity(resources["requests"]["memory"]) <= quantity(resources["limits"]["memory"])
    assert quantity(resources["requests"]["cpu"]) <= quantity(resources["limits"]["cpu"])


def quantity(value: str) -> float:
    """A Kubernetes quantity of the forms the base uses (50m, 1, 96Mi)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", value)
    assert match, f"unexpected quantity {value!r}"
    return float(match[1]) * units.get(match[2], 1)


# --- the network policy -----------------------------------------------------------------


def test_only_prometheus_gets_in_and_only_dns_and_https_get_out(
    rendered: list[dict[str, Any]],
) -> None:
    policy = one(rendered, "NetworkPolicy")["spec"]
    (port,) = container(rendered)["ports"]
    (ingress,) = policy["ingress"]
    (source,) = ingress["from"]
    egress_ports = {
        (rule["port"], rule["protocol"]) for entry in policy["egress"] for rule in entry["ports"]
    }

    assert policy["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert source["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert ingress["ports"] == [{"port": port["name"], "protocol": "TCP"}]
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    assert all(set(entry) == {"ports"} for entry in policy["egress"])


# --- the docs ---------------------------------------------------------------------------


def test_the_documented_secret_is_the_one_the_deployment_reads(
    rendered: list[dict[str, Any]],
) -> None:
    env = container_env(rendered)
    secret = volume_holding(rendered, Path(env[PRIVATE_KEY_FILE_ENV]["value"]))["secret"]
    keys = {item["key"] for item in secret["items"]}
    keys.add(env[PUBLIC_KEY_ENV]["valueFrom"]["secretKeyRef"]["key"])
    doc = DEPLOYING_DOC.read_text(encoding="utf-8")

    command = rf"kubectl (-n \S+ )?create secret generic {secret['secretName']} "
    assert re.search(command, doc), command
    for key in keys:
        assert re.search(rf"--from-(literal|file)={re.escape(key)}=", doc), key


def yaml_blocks(doc: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)


def test_the_documented_overlay_with_a_service_account_renders_and_loads(
    tmp_path: Path,
) -> None:
    """docs/deploying.md's overlay (namespace, own config, image, release label) plus its
    service-account patch, rendered for real: the daemon gets the service account."""
    require_modern_kustomize()
    blocks = yaml_blocks(DEPLOYING_DOC.read_text(encoding="utf-8"))
    (overlay_text,) = [block for block in blocks if block.startswith("# my-overlay/")]
    (patch_text,) = [block for block in blocks if block.startswith("patches:")]
    overlay = tmp_path / "my-overlay"
    overlay.mkdir()
    documented_base = "../atlas-endpoint-monitor/deploy/kubernetes"
    assert documented_base in overlay_text
    overlay_text = overlay_text.replace(documented_base, os.path.relpath(BASE, overlay))
    (overlay / "kustomization.yaml").write_text(overlay_text + patch_text, encoding="utf-8")
    (overlay / "config.yaml").write_text(EXAMPLE_CONFIG.read_text(), encoding="utf-8")

    rendered = kustomize(overlay)
    settings = settings_in_pod(rendered, tmp_path)

    assert {document["metadata"]["namespace"] for document in rendered} == {"monitoring"}
    for kind in CUSTOM_KINDS:
        assert labels_of(one(rendered, kind))["release"] == "kube-prometheus-stack"
    assert one(rendered, "Deployment")["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert container(rendered)["image"].startswith("registry.example.com/")
    assert base_config(rendered) == EXAMPLE_CONFIG.read_text()
    assert settings.credentials.login == ServiceAccount(
        SECRET_DATA["client-id"], settings.credentials.secret
    )
    assert settings.credentials.secret.get_secret_value() == SECRET_DATA["client-secret"]
    assert {CLIENT_ID_ENV, CLIENT_SECRET_FILE_ENV} <= set(container_env(rendered))


def require_modern_kustomize() -> None:
    """Overlays use `labels` and `patches`, which kustomize has had since v4 (kubectl 1.21);
    Debian bookworm's kubernetes-client is kubectl 1.20 with kustomize v2, which renders the
    base but not these."""
    completed = subprocess.run(
        [deployment_tool("kubectl", "kubernetes-client"), "version", "--client"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Kustomize Version: v(\d+)", completed.stdout)
    if found is None or int(found[1]) < 4:
        pytest.skip(f"kubectl's kustomize is older than v4: {completed.stdout.strip()}")
