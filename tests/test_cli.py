"""Command line behaviour: exit codes, messages, and that secrets never reach the terminal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from tests.conftest import (
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


def test_check_says_where_the_private_key_came_from(
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(PRIVATE_KEY, encoding="utf-8")
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY_FILE", str(key_file))
    assert main(["check", "--config", str(write_config())]) == 0
    out = capsys.readouterr().out
    assert f"private key from MONGODB_ATLAS_PRIVATE_API_KEY_FILE ({key_file})" in out
    assert PRIVATE_KEY not in out


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
    assert "  poll.interval_seconds: Input should be greater than 0" in err
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


@pytest.mark.parametrize("command", [[], ["check"], ["once"], ["simulate"], ["demo"]])
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
    assert len(records) == 7
    assert records["payments-prod"] == {
        "name": "payments-prod",
        "group_id": "5e2211c17a3e5a48f5497de3",
        "private_link_id": "5e3a1b2c7a3e5a48f5497de4",
        "interface_endpoint_id": "vpce-0a1b2c3d4e5f60718",
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


def test_demo_polls_the_simulator_prints_urls_and_stops_on_sigint() -> None:
    port = unused_port()
    demo = Process(["demo", "--simulator-port", str(port)], subprocess_env())
    try:
        demo.wait_for_line(lambda line: line.startswith("Press Ctrl-C"))
    finally:
        assert demo.stop(signal.SIGINT) == 0
    output = "\n".join(demo.seen)
    assert f"http://127.0.0.1:{port}/api/atlas/v1.0" in output
    assert "payments-prod" in output
    assert "REJECTED" in output
