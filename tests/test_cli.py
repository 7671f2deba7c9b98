"""Command line behaviour: exit codes, messages, and that secrets never reach the terminal."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor.cli import main
from tests.helpers import (
    PRIVATE_KEY,
    Process,
    WriteConfig,
    config_document,
    endpoint_entry,
    subprocess_env,
    unused_port,
)


def test_check_accepts_a_valid_config(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: valid" in out
    assert "endpoints:    1" in out
    assert PRIVATE_KEY not in out + err


def test_check_says_where_state_lives(
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config()
    monkeypatch.delenv("ATLAS_MONITOR_STATE_PATH", raising=False)
    assert main(["check", "--config", str(path)]) == 0
    assert "state:        in memory (state.path not set)" in capsys.readouterr().out
    monkeypatch.setenv("ATLAS_MONITOR_STATE_PATH", "/var/lib/atlas-endpoint-monitor/state.db")
    assert main(["check", "--config", str(path)]) == 0
    assert "state:        /var/lib/atlas-endpoint-monitor/state.db" in capsys.readouterr().out


def test_commands_that_do_not_reload_get_back_the_sighup_disposition_they_started_with(
    write_config: WriteConfig, credentials_env: dict[str, str]
) -> None:
    """The entry point ignores SIGHUP before importing (monitor.__main__); only `run`
    keeps it so, until its reload handler takes over."""
    started_with = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert main(["check", "--config", str(write_config())], sighup_at_start=started_with) == 0
        assert signal.getsignal(signal.SIGHUP) == started_with
    finally:
        signal.signal(signal.SIGHUP, started_with)


def test_check_says_where_the_private_key_came_from(
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(PRIVATE_KEY, encoding="utf-8")
    key_file.chmod(0o644)
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY_FILE", str(key_file))
    assert main(["check", "--config", str(write_config())]) == 0
    out, err = capsys.readouterr()
    assert f"private key from MONGODB_ATLAS_PRIVATE_API_KEY_FILE ({key_file})" in out
    assert f"warning: env.MONGODB_ATLAS_PRIVATE_API_KEY_FILE: {key_file} has mode 0644" in err
    assert PRIVATE_KEY not in out + err


def test_check_lists_every_problem_with_its_field_and_exits_2(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        config_document(
            poll={"interval_seconds": 0},
            endpoints=[endpoint_entry(), endpoint_entry(), endpoint_entry(group_id="xyz")],
        )
    )
    assert main(["check", "--config", str(path)]) == 2
    _, err = capsys.readouterr()
    assert "invalid configuration:" in err
    assert "  poll.interval_seconds: Input should be greater than or equal to 0.05" in err
    assert "  endpoints.2.group_id: must be 24 hexadecimal characters" in err


def test_check_reports_missing_credentials(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("MONGODB_ATLAS_PUBLIC_API_KEY", "MONGODB_ATLAS_PRIVATE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY_FILE", raising=False)
    assert main(["check", "--config", str(write_config())]) == 2
    _, err = capsys.readouterr()
    assert "env.MONGODB_ATLAS_PUBLIC_API_KEY: not set" in err
    assert "env.MONGODB_ATLAS_PRIVATE_API_KEY: not set" in err


def test_config_path_may_come_from_env(
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ATLAS_MONITOR_CONFIG", str(write_config()))
    assert main(["check"]) == 0
    assert ": valid" in capsys.readouterr().out


def test_check_without_any_config_exits_2(
    credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 2
    assert "--config: not given and ATLAS_MONITOR_CONFIG is not set" in capsys.readouterr().err


def test_once_with_invalid_config_exits_2(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(config_document(endpoints=[endpoint_entry(interface_endpoint_id="x")]))
    assert main(["once", "--config", str(path)]) == 2
    assert "endpoints.0.interface_endpoint_id" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["once"], ["simulate"], ["demo"]])
def test_help_works_on_every_command(command: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "monitor", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage: atlas-endpoint-monitor" in completed.stdout


# `once`, `simulate` and `demo` end to end: real processes, real sockets on 127.0.0.1.

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


@pytest.fixture
def demo_atlas(
    simulator_process: Callable[..., tuple[Process, str]],
    credentials_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The simulator's demo scenario in its own process, and the env pointing at it."""
    _, url = simulator_process()
    monkeypatch.setenv("MONGODB_ATLAS_BASE_URL", url)
    return url


@pytest.mark.usefixtures("demo_atlas")
def test_once_against_the_demo_scenario_prints_the_table_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["once", "--config", str(DEMO_CONFIG)]) == 1
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split()[:5] == ["NAME", "STATUS", "UP", "DELETE_REQ", "ALERTS"]
    assert rows["orders-prod"].split()[1:5] == ["AVAILABLE", "yes", "no", "-"]
    assert rows["payments-prod"].split()[1:5] == ["REJECTED", "yes", "no", "rejected"]
    assert rows["analytics-staging"].split()[4] == "error_message"
    assert "has no subnet in availability zone" in rows["analytics-staging"]
    assert rows["search-prod"].split()[1:5] == ["-", "no", "-", "not_found"]
    assert "404 RESOURCE_NOT_FOUND" in rows["search-prod"]
    # batch-prod answers 503 then 429 first: retried, then healthy
    assert rows["batch-prod"].split()[1:5] == ["AVAILABLE", "yes", "no", "-"]
    assert '"event": "atlas_request_retry"' in err
    assert PRIVATE_KEY not in out + err


@pytest.mark.usefixtures("demo_atlas")
def test_once_json_has_one_object_per_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["once", "--config", str(DEMO_CONFIG), "--output", "json"]) == 1
    records = {record["name"]: record for record in json.loads(capsys.readouterr().out)}
    assert len(records) == len(DEMO_STATUSES)
    assert records["payments-prod"] == {
        "name": "payments-prod",
        "group_id": "5e2211c17a3e5a48f5497de3",
        "private_link_id": "5e3a1b2c7a3e5a48f5497de4",
        "interface_endpoint_id": "vpce-0a1b2c3d4e5f60718",
        "cloud_provider": "AWS",
        "connection_status": "REJECTED",
        "raw_status": "REJECTED",
        "error_message": None,
        "delete_requested": False,
        "up": True,
        "alerts": ["rejected"],
        "poll_error": None,
    }
    assert records["search-prod"]["up"] is False
    assert records["search-prod"]["alerts"] == ["not_found"]
    assert records["search-prod"]["poll_error"].startswith("404 RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(
    ("status", "expected"),
    [("AVAILABLE", ["AVAILABLE"]), ("QUANTUM", ["UNKNOWN", "raw status 'QUANTUM'"])],
)
def test_once_exits_0_without_alert_conditions(
    simulator_process: Callable[..., tuple[Process, str]],
    write_config: WriteConfig,
    tmp_path: Path,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    status: str,
    expected: list[str],
) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({"endpoints": [endpoint_entry(status=status)]}))
    _, url = simulator_process("--scenario", str(scenario))
    path = write_config(config_document(atlas={"base_url": url}))
    assert main(["once", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out


def test_once_with_the_wrong_key_reports_unreachable(
    simulator_process: Callable[..., tuple[Process, str]],
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = simulator_process()
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", "wrong-key-0000")
    path = write_config(config_document(atlas={"base_url": url}))
    assert main(["once", "--config", str(path), "--output", "json"]) == 1
    out, err = capsys.readouterr()
    (record,) = json.loads(out)
    assert record["alerts"] == ["unreachable"]
    assert record["poll_error"] == "401: You are not authorized for this resource."
    assert "wrong-key-0000" not in out + err


def test_simulate_stops_cleanly_on_sigterm(
    simulator_process: Callable[..., tuple[Process, str]],
) -> None:
    process, _ = simulator_process()
    assert process.stop(signal.SIGTERM) == 0


def test_invalid_scenario_exits_2_naming_the_field(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(yaml.safe_dump({"step_seconds": 0, "endpoints": [{"group_id": "x"}]}))
    completed = subprocess.run(
        [sys.executable, "-m", "monitor", "simulate", "--scenario", str(scenario)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=subprocess_env(),
    )
    assert completed.returncode == 2
    assert "step_seconds:" in completed.stderr
    assert "endpoints.0.group_id:" in completed.stderr


def scrape(metrics_url: str) -> dict[str, list[Sample]]:
    assert metrics_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def current_statuses(families: dict[str, list[Sample]]) -> dict[str, str]:
    """interface endpoint id -> the status whose state-set series is 1."""
    return {
        sample.labels["interface_endpoint_id"]: sample.labels["status"]
        for sample in families["atlas_interface_endpoint_status"]
        if sample.value == 1
    }


def alert_lines(lines: list[str]) -> list[tuple[str, str, str]]:
    alerts = []
    for line in lines:
        if line.startswith("{") and '"event": "alert"' in line:
            record = json.loads(line)
            alerts.append((record["name"], record["alert"], record["state"]))
    return alerts


def is_event(event: str) -> Callable[[str], bool]:
    return lambda line: line.startswith("{") and json.loads(line)["event"] == event


AZURE_ID = (
    "/subscriptions/3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b/resourceGroups/{}/providers/"
    "Microsoft.Network/privateEndpoints/{}"
)
# Every endpoint of the demo scenario, by id, once the daemon has seen it; search-prod is
# unknown to Atlas and registered by the daemon on its first cycle.
DEMO_STATUSES = {
    "vpce-0b9c5701325cb15dd": "AVAILABLE",
    "vpce-0a1b2c3d4e5f60718": "REJECTED",
    "vpce-0c2d4e6f8a0b1c3d5": "AVAILABLE",
    "vpce-0d3e5f7a9b1c2d4e6": "PENDING_ACCEPTANCE",
    "vpce-0e4f6a8b0c2d3e5f7": "PENDING_ACCEPTANCE",  # v2 creates AWS endpoints in it
    "vpce-0f5a7b9c1d3e4f6a8": "AVAILABLE",
    "vpce-1a2b3c4d5e6f7a8b9": "AVAILABLE",
    AZURE_ID.format("payments-rg", "payments-pe"): "AVAILABLE",
    AZURE_ID.format("ledger-rg", "ledger-pe"): "FAILED",
    "analytics-psc": "AVAILABLE",
    "ml-psc": "INITIATING",
    # Found by discovery in the second project, not named in the config.
    "/subscriptions/9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d/resourceGroups/eu-rg/providers/"
    "Microsoft.Network/privateEndpoints/reporting-pe": "AVAILABLE",
}
DEMO_ALERTS = sorted(
    [
        ("payments-prod", "rejected", "firing"),
        ("analytics-staging", "error_message", "firing"),
        ("ledger-azure", "failed", "firing"),
        ("ledger-azure", "error_message", "firing"),
        ("AZURE endpoint service 66b2c3d4e5f60718293a4b5c", "service_failed", "firing"),
        ("AZURE endpoint service 66b2c3d4e5f60718293a4b5c", "service_error_message", "firing"),
    ]
)
"""Each once, in whatever order the concurrent polls answer."""


@pytest.fixture
def start_demo_daemon(
    simulator_process: Callable[..., tuple[Process, str]], write_config: WriteConfig
) -> Iterator[Callable[..., Process]]:
    """`run` as a child process on the demo config, against the demo scenario's simulator;
    keyword arguments change the `poll` section."""
    started: list[Process] = []

    def start(**poll: Any) -> Process:
        _, atlas_url = simulator_process()
        document = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
        document["atlas"]["base_url"] = atlas_url
        document["poll"].update({"max_requests_per_minute": None, **poll})
        document["server"]["port"] = unused_port()
        process = Process(["run", "--config", str(write_config(document))], subprocess_env())
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_run_serves_metrics_alerts_once_and_stops_on_sigterm_within_10_s(
    start_demo_daemon: Callable[..., Process],
) -> None:
    daemon = start_demo_daemon(interval_seconds=0.5)
    try:
        started = json.loads(daemon.wait_for_line(is_event("monitor_started")))
        daemon.wait_for_line(is_event("poll_cycle_finished"))
        families = scrape(f"{started['url']}/metrics")
        daemon.wait_for_line(is_event("poll_cycle_finished"))
        daemon.wait_for_line(is_event("poll_cycle_finished"))
    finally:
        stopping = time.monotonic()
        exit_code = daemon.stop(signal.SIGTERM)
        stopped_after = time.monotonic() - stopping
    assert exit_code == 0
    assert stopped_after < 10
    assert current_statuses(families) == DEMO_STATUSES
    assert sorted(alert_lines(daemon.seen)) == DEMO_ALERTS
    assert sum(is_event("endpoint_added")(line) for line in daemon.seen) == 1
    assert PRIVATE_KEY not in "\n".join(daemon.seen)


def test_run_stops_cleanly_when_signalled_during_its_first_cycle(
    start_demo_daemon: Callable[..., Process],
) -> None:
    daemon = start_demo_daemon()
    # batch-prod's scripted 503 and 429 (Retry-After 1 s) keep the first cycle busy.
    daemon.wait_for_line(is_event("atlas_request_retry"))
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.wait_for_line(is_event("stopped"))
    remaining = "\n".join(daemon.seen)
    assert "Unclosed" not in remaining
    assert "Traceback" not in remaining


def test_run_with_invalid_config_exits_2(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(config_document(poll={"interval_seconds": -1}))
    assert main(["run", "--config", str(path)]) == 2
    assert "poll.interval_seconds:" in capsys.readouterr().err


def test_run_never_imports_the_simulator(
    write_config: WriteConfig, credentials_env: dict[str, str]
) -> None:
    """The daemon's process stays free of the simulator's code: cli imports it lazily."""
    path = write_config(config_document(poll={"interval_seconds": -1}))
    program = (
        "import sys\n"
        "import monitor.__main__\n"
        "from monitor.cli import main\n"
        f"status = main(['run', '--config', {str(path)!r}])\n"
        "print(status, sorted(name for name in sys.modules if name.startswith('monitor.')))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", program],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status, _, modules = finished.stdout.strip().partition(" ")
    assert status == "2"
    assert "'monitor.cli'" in modules
    assert "monitor.simulator" not in modules
    assert "monitor.demo" not in modules


def test_run_exits_1_naming_the_address_it_cannot_listen_on(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(
            config_document(
                atlas={"base_url": f"http://127.0.0.1:{unused_port()}", "max_retries": 0},
                server={"host": "127.0.0.1", "port": port},
            )
        )
        assert main(["run", "--config", str(path)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_demo_runs_the_daemon_against_the_simulator_and_stops_on_sigint() -> None:
    demo = Process(["demo", "--simulator-port", "0", "--port", "0"], subprocess_env())
    try:
        metrics_line = demo.wait_for_line(lambda line: line.startswith("Metrics:"))
        demo.wait_for_line(lambda line: "Press Ctrl-C" in line)
        demo.wait_for_line(is_event("poll_cycle_finished"))
        families = scrape(metrics_line.split()[-1])
    finally:
        assert demo.stop(signal.SIGINT) == 0
    assert current_statuses(families) == DEMO_STATUSES
    assert sorted(alert_lines(demo.seen)) == DEMO_ALERTS
    assert any("/api/atlas/v2 (keys demo-public-key" in line for line in demo.seen)


def test_sighup_reloads_the_config_file_and_keeps_it_when_the_new_one_is_invalid(
    simulator_process: Callable[..., tuple[Process, str]], write_config: WriteConfig
) -> None:
    _, atlas_url = simulator_process()
    document = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    every_endpoint = document["endpoints"]
    document["atlas"]["base_url"] = atlas_url
    document["poll"].update(interval_seconds=0.5, max_requests_per_minute=None)
    document["server"]["port"] = unused_port()
    document["endpoints"] = every_endpoint[:1]
    path = write_config(document)
    daemon = Process(["run", "--config", str(path)], subprocess_env())
    try:
        started = json.loads(daemon.wait_for_line(is_event("monitor_started")))
        daemon.wait_for_line(is_event("poll_cycle_finished"))
        document["endpoints"] = every_endpoint
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        daemon.popen.send_signal(signal.SIGHUP)
        reloaded = json.loads(daemon.wait_for_line(is_event("config_reloaded")))
        daemon.wait_for_line(is_event("poll_cycle_finished"))
        families = scrape(f"{started['url']}/metrics")

        path.write_text("poll: {interval_seconds: 0}\n", encoding="utf-8")
        daemon.popen.send_signal(signal.SIGHUP)
        failed = json.loads(daemon.wait_for_line(is_event("config_reload_failed")))
        daemon.wait_for_line(is_event("poll_cycle_finished"))
        after_failure = scrape(f"{started['url']}/metrics")
    finally:
        exit_code = daemon.stop(signal.SIGTERM)
    assert exit_code == 0
    assert reloaded["trigger"] == "SIGHUP"
    assert reloaded["endpoints"] == len(every_endpoint)
    assert current_statuses(families) == DEMO_STATUSES
    too_short = "poll.interval_seconds: Input should be greater than or equal to 0.05"
    assert too_short in failed["problems"]
    assert after_failure["atlas_monitor_config_last_reload_successful"][0].value == 0
    assert current_statuses(after_failure) == DEMO_STATUSES
