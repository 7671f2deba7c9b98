"""Deployment artefacts: the Dockerfile's install replayed for real, and compose wired right.

There is no Docker engine on CI machines, so the image is checked in two halves: its
instructions are read here and held to what the rest of the repo says (port, paths, script
name), and its build and install steps are replayed in a fresh venv outside the checkout.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import venv
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from monitor import __version__
from monitor.config import ServerSettings, parse_config
from monitor.demo import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from tests.helpers import (
    CREDENTIALS_ENV,
    REPO,
    Process,
    deployment_tool,
    dockerfile,
    healthcheck,
    only,
    subprocess_env,
    unused_port,
)

COMMANDS = ("run", "check", "once", "simulate", "demo")
CONFIG_IN_IMAGE = "/etc/atlas-endpoint-monitor/config.yaml"
# The Dockerfile's build and install steps, replayed below with local paths.
BUILD_WHEEL = "python -m build --wheel --outdir /dist"
INSTALL_WHEEL = '"$VIRTUAL_ENV/bin/pip" install --no-cache-dir /tmp/dist/*.whl'
# Compose's "${NAME:-default}" interpolation, resolved to the default as with no .env file.
COMPOSE_VARIABLE = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV" and instruction.stage == 1:
            env.update(re.findall(r"(\w+)=(\S+)", instruction.arguments))
    return env


def compose() -> dict[str, Any]:
    text = COMPOSE_VARIABLE.sub(r"\1", (REPO / "compose.yaml").read_text())
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = REPO / source
    return mounts


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- the Dockerfile, read ---------------------------------------------------------------


def test_the_image_is_built_in_two_stages_from_an_official_slim_python() -> None:
    froms = [i.arguments for i in dockerfile() if i.keyword == "FROM"]
    (base_arg,) = [i.arguments for i in dockerfile() if i.keyword == "ARG" and i.stage == -1]

    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim-\w+", base_arg)
    copied_from_build = [
        i.arguments for i in dockerfile() if i.keyword == "COPY" and "--from=build" in i.arguments
    ]
    assert copied_from_build == ["--from=build /dist /tmp/dist"]


def test_the_runtime_runs_the_console_script_as_an_unprivileged_user() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

    user, _, group = only("USER").arguments.partition(":")
    assert int(user) >= 1000
    assert int(group) >= 1000
    assert only("ENTRYPOINT").exec_form() == list(scripts)
    assert only("CMD").exec_form() == ["run", "--config", CONFIG_IN_IMAGE]


def test_the_exposed_port_is_the_default_one_and_the_healthcheck_asks_it_with_python() -> None:
    default_port = ServerSettings().port
    healthcheck = only("HEALTHCHECK").arguments
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    url = urlsplit(image_env()["ATLAS_MONITOR_HEALTHCHECK_URL"])

    assert only("EXPOSE").arguments == str(default_port)
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", default_port, "/healthz")
    assert command[0] == "python"
    assert "ATLAS_MONITOR_HEALTHCHECK_URL" in command[-1]
    assert not {"curl", "wget"} & set(healthcheck.split())


def test_the_image_is_labelled_with_the_release_its_licence_and_source() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (version_arg,) = [i.arguments for i in dockerfile() if i.keyword == "ARG" and i.stage == 1]
    labels = dict(
        re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', only("LABEL").arguments)
    )

    assert version_arg == f"VERSION={__version__}"
    assert labels == {
        "title": project["name"],
        "version": "${VERSION}",
        "description": labels["description"],
        "licenses": project["license"],
        "source": project["urls"]["Homepage"],
    }
    for provider in ("AWS PrivateLink", "Azure Private Link", "GCP Private Service Connect"):
        assert provider in labels["description"]
        assert provider in project["description"]


def test_the_licence_is_the_apache_license_2_0_text() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    text = (REPO / "LICENSE").read_text()

    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_changelog_has_a_dated_section_for_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()

    assert "## [Unreleased]" in changelog
    assert re.search(
        rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M
    )
    assert re.search(rf"^\[{re.escape(__version__)}\]: https://", changelog, re.M)


def test_the_image_keeps_its_state_file_in_a_volume_its_user_owns() -> None:
    """docs/state.md: the env points into the declared volume, created (so a new named volume
    copies its ownership) for the unprivileged user, not root."""
    (volume,) = only("VOLUME").exec_form()
    state_path = image_env()["ATLAS_MONITOR_STATE_PATH"]
    assert Path(state_path).parent == Path(volume)
    assert f"install -d -o monitor -g monitor -m 0750 {volume}" in only("RUN").arguments
    assert f"monitor-state:{volume}" in [
        volume.split("#")[0].strip() for volume in compose()["services"]["monitor"]["volumes"]
    ]
    assert "monitor-state" in compose()["volumes"]


def test_no_credential_is_baked_into_the_image() -> None:
    for instruction in dockerfile():
        if instruction.keyword in {"ENV", "ARG"}:
            assert "MONGODB_ATLAS" not in instruction.arguments, instruction


def test_the_build_context_holds_exactly_what_the_build_stage_copies() -> None:
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()]
    rules = [line for line in rules if not line.startswith("#")]
    copied = [
        source
        for i in dockerfile()
        if i.keyword == "COPY" and i.stage == 0
        for source in i.arguments.split()[:-1]
    ]

    assert rules[0] == "*"
    admitted = {rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!")}
    assert {source.rstrip("/").removeprefix("./") for source in copied} == admitted
    assert BUILD_WHEEL in [i.arguments for i in dockerfile() if i.keyword == "RUN"]
    assert any(INSTALL_WHEEL in i.arguments for i in dockerfile() if i.keyword == "RUN")


# --- the Dockerfile, replayed -----------------------------------------------------------


@pytest.fixture(scope="module")
def installed_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a fresh venv holding only the wheel built from the image's build context."""
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    for admitted in ("pyproject.toml", "README.md", "LICENSE"):
        context.mkdir(exist_ok=True)
        shutil.copy(REPO / admitted, context / admitted)
    shutil.copytree(
        REPO / "monitor", context / "monitor", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist)],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    environment = root / "venv"
    venv.create(environment, with_pip=True)
    install = subprocess.run(
        [str(environment / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    return environment / "bin"


def run_installed(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "atlas-endpoint-monitor"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=bin_dir,
        env=subprocess_env(),
        check=False,
    )


def test_the_installed_wheel_runs_from_outside_the_checkout(installed_image: Path) -> None:
    where = subprocess.run(
        [str(installed_image / "python"), "-c", "import monitor; print(monitor.__file__)"],
        capture_output=True,
        text=True,
        cwd=installed_image,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed_image.parent)

    assert run_installed(installed_image, "--help").returncode == 0
    for command in COMMANDS:
        result = run_installed(installed_image, command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert command in result.stdout


def test_the_installed_check_validates_the_example_config(installed_image: Path) -> None:
    result = run_installed(installed_image, "check", "--config", str(REPO / "config/example.yaml"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert CREDENTIALS_ENV["MONGODB_ATLAS_PRIVATE_API_KEY"] not in result.stdout + result.stderr


def test_the_installed_check_rejects_a_bad_config(installed_image: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("poll: {interval_seconds: 0}\nendpoints: []\n")

    result = run_installed(installed_image, "check", "--config", str(config))

    assert result.returncode == 2
    assert "poll.interval_seconds" in result.stdout + result.stderr


def test_the_healthcheck_passes_against_the_installed_daemon_and_fails_once_it_stops(
    installed_image: Path,
) -> None:
    port = unused_port()
    demo = Process(
        ["demo", "--simulator-port", "0", "--port", str(port)],
        subprocess_env(),
        program=[str(installed_image / "atlas-endpoint-monitor")],
    )
    try:
        demo.wait_for_line(lambda line: '"monitor_started"' in line)
        assert healthcheck(f"http://127.0.0.1:{port}/healthz") == 0
    finally:
        assert demo.stop(signal.SIGTERM) == 0
    assert healthcheck(f"http://127.0.0.1:{port}/healthz") != 0


# --- compose ----------------------------------------------------------------------------


def test_compose_runs_the_stack_and_the_demo_profile_adds_the_simulator() -> None:
    services = compose()["services"]

    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"monitor", "prometheus", "alertmanager", "grafana"}
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["simulator"]["image"] == services["monitor"]["image"]


def test_every_file_compose_mounts_exists() -> None:
    document = compose()
    mounted = [path for service in document["services"] for path in bind_mounts(service).values()]
    mounted += [REPO / secret["file"] for secret in document["secrets"].values()]

    assert len(mounted) == 7
    for path in mounted:
        assert path.exists(), path


def test_compose_runs_the_monitor_on_the_demo_config_with_the_demo_keys() -> None:
    services = compose()["services"]
    monitor = services["monitor"]
    config_file = bind_mounts("monitor")[CONFIG_IN_IMAGE]
    secret_file = REPO / compose()["secrets"]["atlas_private_key"]["file"]
    config = parse_config(load_yaml(config_file), {})
    packaged = load_yaml(REPO / "monitor/resources/demo-config.yaml")

    assert monitor["environment"]["MONGODB_ATLAS_PUBLIC_API_KEY"] == DEMO_PUBLIC_KEY
    assert secret_file.read_text().strip() == DEMO_PRIVATE_KEY
    assert monitor["environment"]["MONGODB_ATLAS_PRIVATE_API_KEY_FILE"] == (
        "/run/secrets/atlas_private_key"
    )
    assert (config.server.host, config.server.port) == ("0.0.0.0", ServerSettings().port)
    assert monitor["ports"] == [f"{config.server.port}:{config.server.port}"]
    simulator_port = services["simulator"]["command"][-1]
    assert config.atlas.base_url == f"http://simulator:{simulator_port}"
    assert load_yaml(config_file)["endpoints"] == packaged["endpoints"]


def test_prometheus_scrapes_the_monitor_service_and_loads_the_mounted_rules() -> None:
    mounts = bind_mounts("prometheus")
    scrape = load_yaml(mounts["/etc/prometheus/prometheus.yml"])
    targets = [
        target
        for job in scrape["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]

    assert f"monitor:{ServerSettings().port}" in targets
    (rule_glob,) = scrape["rule_files"]
    rules_dir = mounts["/etc/prometheus/rules"]
    pattern = Path(rule_glob).relative_to("/etc/prometheus/rules")
    assert [path for path in rules_dir.iterdir() if fnmatch.fnmatch(path.name, str(pattern))]


def test_prometheus_sends_alerts_to_the_alertmanager_service_running_the_shipped_config() -> None:
    scrape = load_yaml(bind_mounts("prometheus")["/etc/prometheus/prometheus.yml"])
    command = compose()["services"]["alertmanager"]["command"]
    (config_flag,) = [flag for flag in command if flag.startswith("--config.file=")]

    (alertmanagers,) = scrape["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert "9093:9093" in compose()["services"]["alertmanager"]["ports"]
    mounted = bind_mounts("alertmanager")[config_flag.removeprefix("--config.file=")]
    assert mounted == REPO / "config/alertmanager/alertmanager.yml"


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboards() -> None:
    services = compose()["services"]
    mounts = bind_mounts("grafana")
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = load_yaml(provisioning / "datasources/prometheus.yaml")["datasources"]
    providers = [
        load_yaml(path)["providers"] for path in (provisioning / "dashboards").glob("*.yaml")
    ]
    (provider,) = [provider for group in providers for provider in group]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]

    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    dashboards_dir = provider["options"]["path"]
    assert mounts[dashboards_dir] == REPO / "grafana/dashboards"
    assert (REPO / "grafana/dashboards" / Path(home).relative_to(dashboards_dir)).is_file()


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]])
def test_docker_compose_accepts_the_file(profile: list[str]) -> None:
    docker_compose = deployment_tool("docker-compose", "docker-compose")

    result = subprocess.run(
        [docker_compose, *profile, "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
