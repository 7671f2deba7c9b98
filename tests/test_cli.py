"""Command line behaviour: exit codes, messages, and that secrets never reach the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from tests.conftest import PRIVATE_KEY, WriteConfig, config_document, endpoint_entry


def test_check_accepts_a_valid_config(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: valid" in out
    assert "endpoints:    1" in out
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
