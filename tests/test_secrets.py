"""The private key never leaks: not in any log line at any level or format, not in an error,
a repr, a traceback, `check`/`once` output or anything the daemon serves over HTTP.

Every test uses a fresh, distinctive key and searches everything it captured for the key,
for every 10-character piece of it (a truncated or partial leak), for the "SeCrEt-" prefix
all test keys share, and for the Digest HA1 (md5 of user:realm:key), which is as good as
the key to anyone who can talk to Atlas. Where the log masker is on, the masked form
(``**********``) must not appear either: masking is the last line of defence, and code
that hands it the key is a bug even when it catches it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from monitor.atlas import ApiKey, AtlasClient, AtlasError, EndpointRef, describe_failure
from monitor.cli import main
from monitor.config import (
    PRIVATE_KEY_ENV,
    PRIVATE_KEY_FILE_ENV,
    PUBLIC_KEY_ENV,
    ConfigError,
    load_settings,
)
from monitor.lifecycle import serve_on_stack
from monitor.logs import REDACTED, configure_logging
from monitor.polling.poller import build_client, poll_endpoint
from monitor.simulator import Scenario, Simulator
from tests.helpers import (
    MONITOR_PROGRAM,
    PUBLIC_KEY,
    WARNINGS_ENV,
    Process,
    config_document,
    endpoint_entry,
    endpoint_id,
    http_get,
    ids_of,
    json_event,
    subprocess_env,
    unused_port,
    write_yaml,
)

KEY_PREFIX = "SeCrEt-"
FRAGMENT = 10
DIGEST_REALM = "MMS Public API"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_hex(16)


def leaks(text: str, *keys: str) -> list[str]:
    """What of ``keys`` shows in ``text``: any 10-character piece, the shared prefix, or
    the Digest HA1 computed from the key."""
    found = [KEY_PREFIX] if KEY_PREFIX in text else []
    for key in keys:
        pieces = {key[i : i + FRAGMENT] for i in range(len(key) - FRAGMENT + 1)}
        found += sorted(piece for piece in pieces if piece in text)
        ha1 = hashlib.md5(f"{PUBLIC_KEY}:{DIGEST_REALM}:{key}".encode()).hexdigest()  # noqa: S324
        if ha1 in text:
            found.append(f"HA1 {ha1}")
    return found


def assert_no_leak(text: str, *keys: str, where: str, masked_too: bool = True) -> None:
    found = leaks(text, *keys)
    assert not found, f"{where} leaks the private key: {found}\n--- {where} ---\n{text}"
    if masked_too:
        assert REDACTED not in text, (
            f"{where}: the log masker had to hide something; find what handed it the key\n{text}"
        )


# One endpoint per way an exchange with Atlas can go wrong, and a few that go right.
TROUBLE: dict[str, dict[str, Any]] = {
    "healthy": {"status": "AVAILABLE"},
    "rejected": {"status": "REJECTED", "error_message": "Interface endpoint has no subnet"},
    "unknown-status": {"status": "QUANTUM"},
    "retried-503": {"faults": [{"status": 503, "times": 1}]},
    "throttled-once": {"faults": [{"status": 429, "retry_after": 0, "times": 1}]},
    "html-answer": {"faults": [{"body": "<html>proxy login</html>", "content_type": "text/html"}]},
    "bad-shape": {"faults": [{"body": '{"interfaceEndpointId": 42}'}]},
    "dropped": {"faults": [{"drop_connection": True}]},
    "too-slow": {"faults": [{"latency_seconds": 0.6, "methods": ["GET"]}]},
    "forbidden": {"faults": [{"status": 403, "error_code": "IP_ADDRESS_NOT_ON_ACCESS_LIST"}]},
    "missing": {"exists": False, "faults": [{"methods": ["POST"], "status": 500, "times": 1}]},
}
TIMEOUT_SECONDS = 0.3  # "too-slow" answers after 0.6 s


def trouble_entries() -> list[dict[str, Any]]:
    entries = []
    for number, name in enumerate(TROUBLE, start=1):
        entry = endpoint_entry(interface_endpoint_id=endpoint_id(number), name=name)
        if name == "missing":
            entry["add_if_missing"] = True
        entries.append(entry)
    return entries


def trouble_scenario() -> dict[str, Any]:
    return {
        "endpoints": [{**ids_of(entry), **TROUBLE[entry["name"]]} for entry in trouble_entries()]
    }


def daemon_env(private_key: str | None = None, key_file: Path | None = None) -> dict[str, str]:
    """The child's environment: our public key and exactly one private key variable."""
    env = subprocess_env(**WARNINGS_ENV)
    env.pop(PRIVATE_KEY_ENV, None)
    if private_key is not None:
        env[PRIVATE_KEY_ENV] = private_key
    if key_file is not None:
        env[PRIVATE_KEY_FILE_ENV] = str(key_file)
    return env


@pytest.fixture
def children() -> Iterator[Callable[..., Process]]:
    """`python -m monitor ...` children; any still running at the end is killed."""
    started: list[Process] = []

    def start(
        args: list[str], env: dict[str, str], program: Sequence[str] = MONITOR_PROGRAM
    ) -> Process:
        child = Process(args, env, program)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


def start_atlas(
    start: Callable[..., Process], scenario: Path, private_key: str
) -> tuple[Process, str]:
    """The simulator as a child, on ``scenario``, accepting ``private_key``."""
    simulator = start(
        ["simulate", "--port", "0", "--scenario", str(scenario)], daemon_env(private_key)
    )
    line = simulator.wait_for_line(lambda text: json_event(text) == "simulator_started")
    return simulator, str(json.loads(line)["url"])


def trouble_scenario_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "scenario.yaml", trouble_scenario())


def stop_simulator(simulator: Process) -> str:
    assert simulator.stop(signal.SIGTERM) == 0
    return "\n".join(simulator.all_output())


def cycle_ended(line: str) -> bool:
    return "poll_cycle_finished" in line or "poll_cycle_overran" in line


def daemon_config(atlas_url: str, log_format: str) -> dict[str, Any]:
    """Debug logging, one retry, short timeouts, and every troubled endpoint."""
    return config_document(
        atlas={"base_url": atlas_url, "timeout_seconds": TIMEOUT_SECONDS, "max_retries": 1},
        poll={
            "interval_seconds": 0.3,
            "concurrency": len(TROUBLE),
            "max_requests_per_minute": None,
        },
        server={"host": "127.0.0.1", "port": unused_port()},
        log={"level": "debug", "format": log_format},
        alerts={"unreachable_after_failures": 2},
        endpoints=trouble_entries(),
    )


def scrape_everything(base_url: str) -> str:
    """Every page the daemon serves, with status and content type, as one text."""
    pages = []
    for path, accept in [
        ("/metrics", None),
        ("/metrics", "application/openmetrics-text; version=1.0.0"),
        ("/", None),
        ("/healthz", None),
        ("/readyz", None),
    ]:
        status, content_type, body = http_get(base_url + path, accept)
        assert status == 200, (path, status, body)
        pages.append(f"GET {path} ({accept}) -> {status} {content_type}\n{body}")
    return "\n".join(pages)


# What each run must have exercised, so a quiet run cannot pass for a clean one.
EXERCISED = {
    "right key": [
        "atlas_request_retry",
        "atlas_project_throttled",
        "endpoint_poll_failed",
        "consecutive_failures",  # the debug line of a repeated failure
        "unknown_connection_status",
        "endpoint_added",
        "atlas_post_not_applied",
        "expected JSON, got content type 'text/html'",
        "unexpected answer shape",
        "no answer within",
        "IP_ADDRESS_NOT_ON_ACCESS_LIST",
        "unreachable",
        "rejected",
    ],
    "wrong key": ["401: You are not authorized for this resource.", "unreachable"],
    "connection refused": ["cannot connect", "atlas_request_retry", "unreachable"],
}


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("situation", list(EXERCISED))
def test_run_at_debug_never_logs_or_serves_the_key(
    tmp_path: Path, children: Callable[..., Process], situation: str, log_format: str
) -> None:
    """`run` at debug level, in both formats, against a simulator that expects the same key
    (every kind of failed exchange), another key (401s), or nothing at all (refused), then
    stopped by SIGTERM: its whole output, the simulator's, and every page it serves."""
    key, simulator_key = new_key(), new_key()
    simulator = None
    if situation == "connection refused":
        atlas_url = f"http://127.0.0.1:{unused_port()}"
    else:
        accepted = key if situation == "right key" else simulator_key
        simulator, atlas_url = start_atlas(children, trouble_scenario_file(tmp_path), accepted)
    document = daemon_config(atlas_url, log_format)
    config = write_yaml(tmp_path / "config.yaml", document)
    daemon = children(["run", "--config", str(config)], daemon_env(key))
    daemon.wait_for_line(lambda line: "monitor_started" in line)
    daemon.wait_for_line(cycle_ended)
    daemon.wait_for_line(cycle_ended)

    pages = scrape_everything(f"http://127.0.0.1:{document['server']['port']}")
    exit_code = daemon.stop(signal.SIGTERM)
    output = "\n".join(daemon.all_output())
    simulator_output = "" if simulator is None else stop_simulator(simulator)

    assert exit_code == 0, output
    for expected in EXERCISED[situation]:
        assert expected in output, f"the run never showed {expected!r}:\n{output}"
    assert "stopped" in output.splitlines()[-1]
    assert_no_leak(output, key, simulator_key, where="the daemon's output")
    assert_no_leak(pages, key, simulator_key, where="the daemon's pages")
    assert_no_leak(simulator_output, key, simulator_key, where="the simulator's output")


def cli(
    args: list[str], env: dict[str, str], program: Sequence[str] = MONITOR_PROGRAM
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*program, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("right_key", [True, False], ids=["right-key", "wrong-key"])
def test_once_table_and_json_never_print_the_key(
    tmp_path: Path, children: Callable[..., Process], right_key: bool
) -> None:
    key, simulator_key = new_key(), new_key()
    simulator, atlas_url = start_atlas(
        children, trouble_scenario_file(tmp_path), key if right_key else simulator_key
    )
    config = write_yaml(tmp_path / "config.yaml", daemon_config(atlas_url, "json"))
    results = {
        output: cli(["once", "--config", str(config), "--output", output], daemon_env(key))
        for output in ("table", "json")
    }
    simulator_output = stop_simulator(simulator)

    records = json.loads(results["json"].stdout)
    assert len(records) == len(TROUBLE)
    if right_key:
        assert "atlas_request_retry" in results["table"].stderr
    else:
        assert all(record["poll_error"].startswith("401:") for record in records), records
    for output, completed in results.items():
        assert completed.returncode == 1, completed
        where = f"once --output {output}"
        assert_no_leak(completed.stdout, key, simulator_key, where=f"{where} stdout")
        assert_no_leak(completed.stderr, key, simulator_key, where=f"{where} stderr")
    assert_no_leak(simulator_output, key, simulator_key, where="the simulator's output")


# `check`, in process: every outcome, valid or not, with a key somewhere in the environment.


def write_key_file(path: Path, content: bytes, mode: int) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("case", "config_valid", "expected_exit"),
    [
        ("key in env", True, 0),
        ("key file 0400", True, 0),
        ("key file 0644", True, 0),
        ("key file without final newline, 0600", True, 0),
        ("invalid config, key in env", False, 2),
        ("invalid config, key file", False, 2),
        ("both key variables", True, 2),
        ("key file not UTF-8", True, 2),
        ("key file is a directory", True, 2),
        ("key file missing", True, 2),
        ("public key missing", True, 2),
    ],
)
def test_check_never_prints_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    config_valid: bool,
    expected_exit: int,
) -> None:
    key = new_key()
    for name in (PRIVATE_KEY_ENV, PRIVATE_KEY_FILE_ENV, "MONGODB_ATLAS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(PUBLIC_KEY_ENV, PUBLIC_KEY)
    key_file = tmp_path / "atlas-private-key"
    if case in ("key in env", "invalid config, key in env", "both key variables"):
        monkeypatch.setenv(PRIVATE_KEY_ENV, key)
    if case == "public key missing":
        monkeypatch.delenv(PUBLIC_KEY_ENV)
        monkeypatch.setenv(PRIVATE_KEY_ENV, key)
    if "key file" in case or case == "both key variables":
        monkeypatch.setenv(PRIVATE_KEY_FILE_ENV, str(key_file))
        if case == "key file is a directory":
            key_file.mkdir()
        elif case == "key file not UTF-8":
            write_key_file(key_file, key.encode() + b"\xff\xfe\n", 0o400)
        elif case == "key file 0644":
            write_key_file(key_file, f"{key}\n".encode(), 0o644)
        elif case == "key file without final newline, 0600":
            write_key_file(key_file, key.encode(), 0o600)
        elif case != "key file missing":
            write_key_file(key_file, f"{key}\n".encode(), 0o400)
    document = config_document()
    if not config_valid:
        document = config_document(poll={"interval_seconds": 0}, bogus={"x": 1})
    config = write_yaml(tmp_path / "config.yaml", document)

    assert main(["check", "--config", str(config)]) == expected_exit
    out, err = capsys.readouterr()
    assert_no_leak(out + err, key, where=f"check ({case})")
    if expected_exit == 0:
        assert f"{config}: valid" in out
    else:
        assert err.startswith("invalid configuration:")
    if case == "key file 0644":
        assert f"warning: env.{PRIVATE_KEY_FILE_ENV}: {key_file} has mode 0644" in err
    else:
        assert "warning:" not in err


def test_check_does_not_echo_a_key_put_into_the_file_variable_by_mistake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MONGODB_ATLAS_PRIVATE_API_KEY_FILE=<the key itself> is an easy slip (the two names
    differ by a suffix). The value is then no readable path, and `check`'s message about
    it must not print the key to the terminal or the CI log."""
    key = new_key()
    monkeypatch.delenv(PRIVATE_KEY_ENV, raising=False)
    monkeypatch.setenv(PUBLIC_KEY_ENV, PUBLIC_KEY)
    monkeypatch.setenv(PRIVATE_KEY_FILE_ENV, key)
    config = write_yaml(tmp_path / "config.yaml", config_document())

    assert main(["check", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert f"env.{PRIVATE_KEY_FILE_ENV}: cannot read" in err
    assert_no_leak(out + err, key, where="check with the key in the _FILE variable")


# Key files as an unprivileged user sees them, the way containers and systemd run the daemon.

NOBODY = 65534


@dataclasses.dataclass
class Unprivileged:
    """Runs children as an unprivileged user: ``nobody`` when the tests run as root (the
    only way 0400 and read-only directories mean anything), else the current user."""

    program: Sequence[str]
    shared: Path
    """A directory that user can read, for configs and key files."""

    def give(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, NOBODY, NOBODY)


@pytest.fixture
def unprivileged() -> Iterator[Unprivileged]:
    program: Sequence[str] = MONITOR_PROGRAM
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop privileges")
        program = (
            setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            *MONITOR_PROGRAM,
        )
    shared = Path(tempfile.mkdtemp(prefix="atlas-monitor-key-"))
    shared.chmod(0o755)
    try:
        yield Unprivileged(program, shared)
    finally:
        for directory, _, _ in os.walk(shared):
            Path(directory).chmod(0o700)
        shutil.rmtree(shared)


def polled_all_up(line: str, endpoints: int) -> bool:
    if json_event(line) not in ("poll_cycle_finished", "poll_cycle_overran"):
        return False
    record = json.loads(line)
    return bool(record["endpoints"] == endpoints and record["up"] == endpoints)


HEALTHY = [endpoint_entry(interface_endpoint_id=endpoint_id(n)) for n in (1, 2)]


def healthy_atlas(
    start: Callable[..., Process], tmp_path: Path, private_key: str
) -> tuple[Process, str]:
    """The simulator as a child, every endpoint of HEALTHY AVAILABLE."""
    endpoints = [{**ids_of(entry), "status": "AVAILABLE"} for entry in HEALTHY]
    scenario = write_yaml(tmp_path / "healthy.yaml", {"endpoints": endpoints})
    return start_atlas(start, scenario, private_key)


def healthy_config(shared: Path, atlas_url: str) -> Path:
    config = write_yaml(
        shared / "config.yaml",
        config_document(
            atlas={"base_url": atlas_url, "max_retries": 0},
            poll={"interval_seconds": 60, "max_requests_per_minute": None},
            server={"host": "127.0.0.1", "port": unused_port()},
            log={"level": "debug"},
            endpoints=HEALTHY,
        ),
    )
    config.chmod(0o644)
    return config


def test_run_and_check_read_a_0400_key_file_in_a_read_only_directory(
    tmp_path: Path, children: Callable[..., Process], unprivileged: Unprivileged
) -> None:
    """The Kubernetes/Docker secret layout: the key, with a trailing newline, in a 0400
    file of the daemon's user, in a directory nobody may write. `run` polls with it (every
    endpoint up), `check` names the file, and neither warns nor shows the key."""
    key = new_key()
    simulator, atlas_url = healthy_atlas(children, tmp_path, key)
    secrets_dir = unprivileged.shared / "secrets"
    secrets_dir.mkdir()
    key_file = write_key_file(secrets_dir / "atlas-private-key", f"{key}\n".encode(), 0o400)
    unprivileged.give(key_file)
    unprivileged.give(secrets_dir)
    secrets_dir.chmod(0o500)
    config = healthy_config(unprivileged.shared, atlas_url)
    env = daemon_env(key_file=key_file)

    checked = cli(["check", "--config", str(config)], env, unprivileged.program)
    daemon = children(["run", "--config", str(config)], env, unprivileged.program)
    daemon.wait_for_line(lambda line: polled_all_up(line, len(HEALTHY)))
    exit_code = daemon.stop(signal.SIGTERM)
    output = "\n".join(daemon.all_output())
    simulator_output = stop_simulator(simulator)

    assert checked.returncode == 0, checked
    assert f"private key from {PRIVATE_KEY_FILE_ENV} ({key_file})" in checked.stdout
    assert checked.stderr == ""
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o500
    assert exit_code == 0, output
    assert "config_warning" not in output
    assert_no_leak(checked.stdout + checked.stderr, key, where="check")
    assert_no_leak(output, key, where="the daemon's output")
    assert_no_leak(simulator_output, key, where="the simulator's output")


def test_a_key_file_the_daemon_user_cannot_read_is_a_config_error_without_the_key(
    unprivileged: Unprivileged,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file this user cannot read")
    key = new_key()
    key_file = write_key_file(unprivileged.shared / "root-only-key", f"{key}\n".encode(), 0o400)
    config = healthy_config(unprivileged.shared, f"http://127.0.0.1:{unused_port()}")
    env = daemon_env(key_file=key_file)

    checked = cli(["check", "--config", str(config)], env, unprivileged.program)
    ran = cli(["run", "--config", str(config)], env, unprivileged.program)

    for completed in (checked, ran):
        assert completed.returncode == 2, completed
        assert (
            f"env.{PRIVATE_KEY_FILE_ENV}: cannot read {key_file}: Permission denied"
            in completed.stderr
        )
        assert_no_leak(completed.stdout + completed.stderr, key, where=" ".join(completed.args))


def test_a_0644_key_file_works_with_a_warning_that_names_the_mode_not_the_key(
    tmp_path: Path, children: Callable[..., Process], unprivileged: Unprivileged
) -> None:
    key = new_key()
    simulator, atlas_url = healthy_atlas(children, tmp_path, key)
    key_file = write_key_file(unprivileged.shared / "atlas-private-key", key.encode(), 0o644)
    unprivileged.give(key_file)
    config = healthy_config(unprivileged.shared, atlas_url)
    env = daemon_env(key_file=key_file)

    checked = cli(["check", "--config", str(config)], env, unprivileged.program)
    daemon = children(["run", "--config", str(config)], env, unprivileged.program)
    warning = json.loads(daemon.wait_for_line(lambda line: json_event(line) == "config_warning"))
    daemon.wait_for_line(lambda line: polled_all_up(line, len(HEALTHY)))
    exit_code = daemon.stop(signal.SIGTERM)
    output = "\n".join(daemon.all_output())
    stop_simulator(simulator)

    expected = f"env.{PRIVATE_KEY_FILE_ENV}: {key_file} has mode 0644"
    assert checked.returncode == 0, checked
    assert checked.stderr.startswith(f"warning: {expected}"), checked.stderr
    assert warning["level"] == "warning"
    assert warning["problem"].startswith(expected)
    assert exit_code == 0, output
    assert_no_leak(checked.stdout + checked.stderr, key, where="check")
    assert_no_leak(output, key, where="the daemon's output")


# In process: reprs, errors and tracebacks, with the masker off so only the code is judged.


def test_reprs_of_settings_credentials_config_and_client_hide_the_key(tmp_path: Path) -> None:
    key = new_key()
    config = write_yaml(tmp_path / "config.yaml", config_document())
    key_file = write_key_file(tmp_path / "key", f"{key}\n".encode(), 0o600)
    from_env = load_settings(config, {PUBLIC_KEY_ENV: PUBLIC_KEY, PRIVATE_KEY_ENV: key})
    from_file = load_settings(
        config, {PUBLIC_KEY_ENV: PUBLIC_KEY, PRIVATE_KEY_FILE_ENV: str(key_file)}
    )
    texts = []
    for settings in (from_env, from_file):
        assert settings.credentials.secret.get_secret_value() == key
        client = build_client(settings)
        for thing in (
            settings,
            settings.credentials,
            settings.config,
            settings.credentials.secret,
            dataclasses.asdict(settings),
            client,
            vars(client),
        ):
            texts += [repr(thing), str(thing), f"{thing}", f"{thing!r}"]
        texts.append(settings.config.model_dump_json())
        texts.append(json.dumps(dataclasses.asdict(settings.credentials), default=str))
    assert_no_leak("\n".join(texts), key, where="reprs", masked_too=False)


def test_config_errors_never_carry_the_key(tmp_path: Path) -> None:
    key = new_key()
    bad = write_yaml(tmp_path / "config.yaml", config_document(poll={"interval_seconds": -1}))
    directory = tmp_path / "a-directory"
    directory.mkdir()
    environments = [
        {PUBLIC_KEY_ENV: PUBLIC_KEY, PRIVATE_KEY_ENV: key},
        {PRIVATE_KEY_ENV: key},
        {PUBLIC_KEY_ENV: PUBLIC_KEY, PRIVATE_KEY_ENV: key, PRIVATE_KEY_FILE_ENV: str(directory)},
        {PUBLIC_KEY_ENV: PUBLIC_KEY, PRIVATE_KEY_FILE_ENV: str(directory)},
    ]
    texts = []
    for env in environments:
        with pytest.raises(ConfigError) as caught:
            load_settings(bad, env)
        error = caught.value
        texts += [str(error), repr(error), *error.problems, *traceback.format_exception(error)]
    assert_no_leak("\n".join(texts), key, where="config errors", masked_too=False)


@asynccontextmanager
async def in_process_atlas(private_key: str) -> AsyncIterator[str]:
    """The simulator in this event loop on the trouble scenario; yields its URL."""
    simulator = Simulator(
        Scenario.model_validate(trouble_scenario()),
        public_key=PUBLIC_KEY,
        private_key=private_key,
    )
    async with AsyncExitStack() as served:
        yield await serve_on_stack(served, simulator.app, "127.0.0.1", 0)


def client_for(url: str, private_key: str, **options: Any) -> AtlasClient:
    async def no_back_off(seconds: float) -> None:
        return None

    return AtlasClient(
        base_url=url,
        login=ApiKey(PUBLIC_KEY, SecretStr(private_key)),
        timeout_seconds=TIMEOUT_SECONDS,
        max_retries=1,
        sleep=no_back_off,
        **options,
    )


def refs() -> list[EndpointRef]:
    return [EndpointRef(**ids_of(entry)) for entry in trouble_entries()]


def everything_about(error: BaseException) -> str:
    """An error as any code path could show it: str, repr, args, attributes, traceback,
    and the same for every exception chained to it (even where ``from None`` hides it)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        parts += traceback.format_exception(current)
        if isinstance(current, AtlasError):
            parts.append(describe_failure(current))
        pending += [current.__cause__, current.__context__]  # type: ignore[list-item]
    return "\n".join(parts)


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """Every log line at debug, json, WITHOUT the masker: only the code keeps the key out."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_errors_of_failing_exchanges_never_carry_the_key(
    captured_log: io.StringIO,
) -> None:
    """GET, POST and DELETE of every troubled endpoint with the right key, a wrong key, and
    against a closed port: every AtlasError, with its chain and traceback."""
    key, other_key = new_key(), new_key()
    errors: list[BaseException] = []
    async with in_process_atlas(key) as url:
        clients = [
            client_for(url, key),
            client_for(url, other_key),
            client_for(f"http://127.0.0.1:{unused_port()}", key),
        ]
        for client in clients:
            async with client:
                for ref in refs():
                    for call in (
                        client.get_interface_endpoint,
                        client.add_interface_endpoint,
                        client.delete_interface_endpoint,
                    ):
                        try:
                            await call(ref)
                        except AtlasError as error:
                            errors.append(error)

    kinds = {type(error).__name__ for error in errors}
    assert kinds >= {
        "AtlasAuthError",
        "AtlasBadResponseError",
        "AtlasUnreachableError",
        "AtlasRequestError",
    }, kinds
    text = "\n".join(everything_about(error) for error in errors)
    assert_no_leak(text, key, other_key, where="AtlasErrors", masked_too=False)
    assert_no_leak(captured_log.getvalue(), key, other_key, where="the log", masked_too=False)


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_a_traceback_from_inside_the_digest_exchange_is_logged_without_the_key(
    tmp_path: Path, log_format: str
) -> None:
    """An unexpected exception raised in the middle of a Digest-authenticated exchange is
    logged by `poll_failed_unexpectedly` with its traceback: no key in it (masker off)."""
    key = new_key()
    stream = io.StringIO()
    configure_logging("debug", log_format, stream=stream)

    def broken_observer(method: str, code: str, seconds: float) -> None:
        raise RuntimeError(f"observer bug after {method} answered {code}")

    settings = load_settings(
        write_yaml(tmp_path / "config.yaml", config_document()),
        {PUBLIC_KEY_ENV: PUBLIC_KEY, PRIVATE_KEY_ENV: key},
    )
    try:
        async with (
            in_process_atlas(key) as url,
            client_for(url, key, observer=broken_observer) as client,
        ):
            (endpoint,) = settings.config.endpoints
            result = await poll_endpoint(client, endpoint)
    finally:
        structlog.reset_defaults()

    output = stream.getvalue()
    assert isinstance(result.error, RuntimeError)
    assert "poll_failed_unexpectedly" in output
    assert "Traceback (most recent call last)" in output
    assert "digest" in output.lower(), "the traceback should pass through the Digest middleware"
    assert_no_leak(output, key, where=f"the {log_format} traceback", masked_too=False)
    assert_no_leak(everything_about(result.error), key, where="the error", masked_too=False)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_the_masker_hides_the_key_inside_any_logged_value(log_format: str) -> None:
    """The last line of defence must hold for whatever a future log call passes: not just
    str values, but exceptions, bytes, paths, SecretStr's unwrapped value inside objects,
    and mapping keys, which the renderers turn into text after the masker ran."""
    key = new_key()
    stream = io.StringIO()
    configure_logging("debug", log_format, stream=stream, secrets=[key])
    log = structlog.get_logger("test")
    try:
        log.info("as_text", value=f"key={key}", nested={"deep": [f"x{key}x"]})
        log.info("as_exception", error=ValueError(f"bad key {key}"))
        log.info("as_bytes", body=key.encode())
        log.info("as_path", path=Path("/run/secrets") / key)
        log.info("as_mapping_key", headers={key: "value"})
        log.info("as_tuple_of_objects", args=(ValueError(key),))
        log.info("positional %s", key)
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    assert output.count("\n") >= 7
    leaked = [line for line in output.splitlines() if leaks(line, key)]
    assert not leaked, "lines the masker let through:\n" + "\n".join(leaked)
