"""Helpers shared by the tests: constants, builders, a virtual-time loop, processes and
real tools. Fixtures live in tests/conftest.py (structlog's layout: helpers.py beside a
fixtures-only conftest.py); tests import what they need from here, never from conftest or
from one another."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from pydantic import SecretStr
from yarl import URL

from monitor.atlas import ApiKey, AtlasClient
from monitor.config import BASE_URL_ENV, Credentials, Settings, parse_config
from monitor.exposition import MonitorMetrics
from monitor.polling.poller import Monitor, build_client
from monitor.polling.statestore import StateStore
from monitor.providers import CloudProvider
from monitor.simulator import ScenarioEndpoint, Simulator

GROUP_ID = "5e2211c17a3e5a48f5497de3"
PRIVATE_LINK_ID = "5e3a1b2c7a3e5a48f5497de4"
ENDPOINT_ID = "vpce-0b9c5701325cb15dd"
PUBLIC_KEY = "test-public-key"
PRIVATE_KEY = "test-private-key-5f1d9c"

CREDENTIALS_ENV = {
    "MONGODB_ATLAS_PUBLIC_API_KEY": PUBLIC_KEY,
    "MONGODB_ATLAS_PRIVATE_API_KEY": PRIVATE_KEY,
}


def endpoint_entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "group_id": GROUP_ID,
        "private_link_id": PRIVATE_LINK_ID,
        "interface_endpoint_id": ENDPOINT_ID,
    }
    entry.update(overrides)
    return entry


def config_document(**sections: Any) -> dict[str, Any]:
    """A minimal valid config; keyword arguments replace whole top-level sections."""
    document: dict[str, Any] = {"endpoints": [endpoint_entry()]}
    document.update(sections)
    return document


def endpoint_id(number: int) -> str:
    """A distinct, valid interface endpoint id per number."""
    return f"vpce-{number:017x}"


def settings_for(base_url: str, **sections: Any) -> Settings:
    """Settings for a daemon pointed at ``base_url`` (a simulator), with test credentials.

    Polling defaults to fast and unforgiving (no retries, no pacing), as tests want it.
    """
    document = config_document(**sections)
    document.setdefault("atlas", {"timeout_seconds": 5, "max_retries": 0})
    document["poll"] = {"max_requests_per_minute": None, **document.get("poll", {})}
    document.setdefault("server", {"host": "127.0.0.1", "port": 10479})
    config = parse_config(document, {BASE_URL_ENV: base_url})
    credentials = Credentials(ApiKey(PUBLIC_KEY, SecretStr(PRIVATE_KEY)), "the test")
    return Settings(config=config, credentials=credentials, source=Path("test-config.yaml"))


def simulated(entry: dict[str, Any], **state: Any) -> ScenarioEndpoint:
    """The simulator's side of a config entry: same ids, the given state (exists, status,
    error_message, timeline, faults...)."""
    ids = ("group_id", "private_link_id", "interface_endpoint_id")
    return ScenarioEndpoint(**{key: entry[key] for key in ids}, **state)


def ids_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The three ids of a config entry, as keywords for the simulator's methods."""
    return {key: entry[key] for key in ("group_id", "private_link_id", "interface_endpoint_id")}


@contextlib.asynccontextmanager
async def monitoring(
    settings: Settings, clock: Callable[[], float] = time.time, store: StateStore | None = None
) -> AsyncIterator[tuple[Monitor, AtlasClient]]:
    """A Monitor and its client, for driving cycles by hand (no scheduler)."""
    monitor = Monitor(settings.config, MonitorMetrics(), clock=clock, store=store)
    async with build_client(settings, observer=monitor.metrics.observe_request) as client:
        yield monitor, client


def events_in(logs: Iterable[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == event]


def alerts_in(logs: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(name, alert, state) of every alert line, in order."""
    return [(line["name"], line["alert"], line["state"]) for line in events_in(logs, "alert")]


class _TimeJumpingSelector(selectors.DefaultSelector):
    """Never blocks: when nothing is ready, it moves its clock to the loop's next timer."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.now = start

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is left to fire")
        self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: whenever every task waits, its clock jumps to the next
    timer. Minutes of paced requests run in milliseconds, and every duration is exact, so
    a test can assert a schedule without being a timed test."""

    def __init__(self, start: float = 1000.0) -> None:
        self._jumping = _TimeJumpingSelector(start)
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


Result = TypeVar("Result")
RunVirtually = Callable[[Awaitable[Result]], Result]


WriteConfig = Callable[..., Path]


class ResponseWithoutUpload(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument
    (pnuckowski/aioresponses#289); a mocked response has no upload, so a stub stands in."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


StartSimulator = Callable[..., Awaitable[tuple[Simulator, str]]]


@dataclass
class RunningDaemon:
    monitor: Monitor
    url: str


StartDaemon = Callable[..., Awaitable[RunningDaemon]]


MONITOR_PROGRAM = (sys.executable, "-m", "monitor")
END_OF_OUTPUT = "\x00<end of output>"
"""Queued after a child's last line, so a reader knows it has seen everything."""
# Show every ResourceWarning (unclosed sockets, sessions), which Python hides by default.
WARNINGS_ENV = {"PYTHONWARNINGS": "always::ResourceWarning"}


def json_event(line: str) -> str | None:
    """The ``event`` of a JSON log line, None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        return str(json.loads(line)["event"])
    except (ValueError, KeyError):
        return None


def http_get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET to the daemon; 4xx/5xx are answers too."""
    assert url.startswith("http://127.0.0.1:")
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


class Process:
    """A child process whose output lines are collected by a thread, so waits can time out.

    ``program`` defaults to this checkout's monitor; deployment tests pass an installed
    console script or Prometheus instead.
    """

    def __init__(
        self, args: list[str], env: dict[str, str], program: Sequence[str] = MONITOR_PROGRAM
    ) -> None:
        self.popen = subprocess.Popen(
            [*program, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(END_OF_OUTPUT)

    def all_output(self, timeout: float = 10) -> list[str]:
        """Everything the process wrote, to its last line (it must have exited or be about to)."""
        if END_OF_OUTPUT not in self.seen:
            self.wait_for_line(lambda line: line == END_OF_OUTPUT, timeout)
        return [line for line in self.seen if line != END_OF_OUTPUT]

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=5)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout} s; output so far: {self.seen}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
            raise


REQUIRE_TOOLS_ENV = "ATLAS_MONITOR_REQUIRE_TOOLS"


def deployment_tool(name: str, debian_package: str) -> str:
    """The path of an external tool the deployment tests run (promtool, prometheus...).

    CI sets ATLAS_MONITOR_REQUIRE_TOOLS=1 after installing them, so there a missing tool
    fails the test; on a developer machine with only python3 and make it is skipped, with
    the reason in pytest's summary, so `make test` keeps working there.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} not found: apt-get install {debian_package} (.ci/run does)"
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


_PORTS_HANDED_OUT: set[int] = set()


def _ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out by itself (to ``bind`` on port 0 and to outgoing
    connections); 32768 when the host does not say."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, taken below the kernel's ephemeral range.

    A port the kernel picked for a probe socket is one it may pick again at once for the next
    ``bind`` on port 0 (a simulator started with ``--simulator-port 0``) or for an outgoing
    connection, and the test's server then fails with "address already in use". Ports below
    the ephemeral range are never picked that way, so only another listener could take it;
    each is handed out once per test run.
    """
    chooser = random.SystemRandom()
    floor = _ephemeral_port_floor()
    candidates = range(max(1024, floor - 12768), floor)
    for _ in range(200):
        port = chooser.choice(candidates)
        if port in _PORTS_HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {candidates.start}-{candidates.stop - 1}")


@contextlib.asynccontextmanager
async def running_prometheus(
    binary: str, config: dict[str, Any], directory: Path
) -> AsyncIterator[str]:
    """Debian's Prometheus as a child process on a free 127.0.0.1 port, with ``config`` and
    a throwaway data dir under ``directory``; yields its base URL once it serves."""
    port = unused_port()
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    process = Process(
        [
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        subprocess_env(),
        program=[binary],
    )
    try:
        await asyncio.to_thread(
            process.wait_for_line, lambda line: "Server is ready to receive web requests" in line
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.to_thread(process.stop)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MONGODB_ATLAS_", "ATLAS_MONITOR_"))
    }
    env.update(CREDENTIALS_ENV)
    env.update(extra)
    return env


REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int
    """0 for the build stage, 1 for the runtime stage."""

    def exec_form(self) -> list[str]:
        parsed: list[str] = json.loads(self.arguments)
        return parsed


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    instructions = []
    stage = -1
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


def only(keyword: str, stage: int = 1) -> Instruction:
    (found,) = [i for i in dockerfile() if i.keyword == keyword and i.stage == stage]
    return found


def healthcheck(url: str) -> int:
    """The image's HEALTHCHECK command, as Docker would run it."""
    healthcheck = only("HEALTHCHECK").arguments
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    probe = subprocess.run(
        [sys.executable, *command[1:]],
        env={"ATLAS_MONITOR_HEALTHCHECK_URL": url},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode


JOB = "atlas-endpoint-monitor"
DATA_TIMEOUT_SECONDS = 60


def scrape_config(targets: list[str]) -> dict[str, Any]:
    """A scrape job under the shipped config's job name (the rules match it) for ``targets``."""
    return {"job_name": JOB, "static_configs": [{"targets": targets}]}


async def query(session: aiohttp.ClientSession, base: str, expression: str) -> list[Any]:
    """The instant query's result; an invalid expression fails with Prometheus' error."""
    async with session.get(f"{base}/api/v1/query", params={"query": expression}) as response:
        body = await response.json()
    assert body["status"] == "success", f"{expression}: {body.get('error')}"
    result: list[Any] = body["data"]["result"]
    return result


async def wait_for_data(
    session: aiohttp.ClientSession, base: str, expressions: dict[str, str]
) -> dict[str, list[Any]]:
    """Query every expression until each has returned data, or fail naming those that never did.

    Rates and quantiles need two scrapes and the alert gauges a few poll cycles, so the first
    rounds legitimately come back empty.
    """
    answered: dict[str, list[Any]] = {}
    for _ in range(DATA_TIMEOUT_SECONDS):
        for label, expression in expressions.items():
            if label not in answered and (result := await query(session, base, expression)):
                answered[label] = result
        if len(answered) == len(expressions):
            return answered
        await asyncio.sleep(1)
    silent = {label: expressions[label] for label in expressions if label not in answered}
    raise AssertionError(f"no data within {DATA_TIMEOUT_SECONDS} s from {silent}")


async def wait_for_alert(
    session: aiohttp.ClientSession, base: str, alertname: str
) -> dict[str, Any]:
    for _ in range(DATA_TIMEOUT_SECONDS):
        async with session.get(f"{base}/api/v1/alerts") as response:
            alerts = (await response.json())["data"]["alerts"]
        for alert in alerts:
            if alert["labels"]["alertname"] == alertname and alert["state"] == "firing":
                found: dict[str, Any] = alert
                return found
        await asyncio.sleep(1)
    raise AssertionError(f"{alertname} not firing within {DATA_TIMEOUT_SECONDS} s")


# What a shutdown that forgot to close or await something leaves on stdout/stderr.
SHUTDOWN_DEBRIS = (
    "Unclosed client session",
    "Unclosed connector",
    "Unclosed",
    "Task was destroyed but it is pending",
    "Traceback",
    "Exception ignored",
    "poll_cycle_did_not_stop",
)


def is_event(*events: str) -> Callable[[str], bool]:
    return lambda line: json_event(line) in events


def assert_clean_shutdown(lines: list[str], signal_name: str) -> None:
    """The log ends with `stopping` (naming the signal) and then `stopped`, and nothing
    after the daemon's own last line: no warnings, tracebacks or unawaited tasks."""
    text = "\n".join(lines)
    for debris in SHUTDOWN_DEBRIS:
        assert debris not in text, f"{debris!r} in the output:\n{text}"
    assert lines, "no output at all"
    assert json_event(lines[-1]) == "stopped", f"last line is not `stopped`:\n{text}"
    stopping = [json.loads(line) for line in lines if json_event(line) == "stopping"]
    assert [line["signal"] for line in stopping] == [signal_name]
    stopping_at = next(i for i, line in enumerate(lines) if json_event(line) == "stopping")
    after_stopping = {json_event(line) for line in lines[stopping_at + 1 : -1]}
    # Between the two, only the cancelled cycle may speak.
    assert after_stopping <= {"poll_cycle_cancelled"}, text


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def run_daemon(
    tmp_path: Path, start: Callable[..., Process], atlas_url: str, **sections: Any
) -> tuple[Process, str]:
    """`run` as a child on a free port, logging at debug; returns it and its base URL once
    it has announced `monitor_started`."""
    port = unused_port()
    document = config_document(**sections)
    document["atlas"] = {"base_url": atlas_url, **document.get("atlas", {})}
    document["server"] = {"host": "127.0.0.1", "port": port}
    document["log"] = {"level": "debug", "format": "json"}
    daemon = start(["run", "--config", str(write_yaml(tmp_path / "config.yaml", document))])
    started = json.loads(daemon.wait_for_line(is_event("monitor_started")))
    assert started["url"] == f"http://127.0.0.1:{port}"
    return daemon, started["url"]


ALERTMANAGER_CONFIG = REPO / "config" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_DIR = REPO / "config" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULES_FILE = RULES_DIR / "atlas-endpoint-monitor.rules.yml"


def run_tool(
    program: str, package: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a deployment tool (from Debian ``package``) in the repository and assert it
    succeeded, showing both its streams when it did not."""
    result = subprocess.run(
        [deployment_tool(program, package), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{program} {' '.join(args)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    return result


def run_promtool(*args: str) -> str:
    """Run promtool, assert it succeeded, and return its output for further checks."""
    result = run_tool("promtool", "prometheus", *args)
    return f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(text: str) -> float:
    """A Prometheus/Alertmanager duration (``5m``, ``22s500ms``; no days or weeks) in
    seconds."""
    parts = re.findall(r"(\d+)(ms|h|m|s)", text)
    assert text, "an empty duration"
    assert "".join(f"{number}{unit}" for number, unit in parts) == text, text
    return sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)


def flushes_clear_of_evaluations(group_wait: str, group_interval: str, evaluation: str) -> bool:
    """Whether every flush of an Alertmanager group stays at least a quarter of an
    evaluation interval away from the evaluations, whose alerts Prometheus sends rule by
    rule: the group's flushes come ``group_wait`` after its first alert (which arrives
    just after an evaluation) and every ``group_interval`` after that."""
    interval = duration_seconds(evaluation)
    offset = duration_seconds(group_wait) % interval
    return (
        duration_seconds(group_interval) % interval == 0
        and interval / 4 <= offset <= interval * 3 / 4
    )


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def alerting_rules() -> list[dict[str, Any]]:
    groups = load_yaml(RULES_FILE)["groups"]
    rules = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert rules, f"no alerting rules in {RULES_FILE}"
    return rules


HEALTHY = endpoint_entry(
    interface_endpoint_id=endpoint_id(1), name="orders", labels={"env": "prod"}
)


async def fetch(url: str, **headers: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.text()


AWS_SERVICE = "65a1b2c3d4e5f60718293a51"


def at_atlas(
    provider: CloudProvider, service_id: str, endpoint: str, **state: Any
) -> ScenarioEndpoint:
    return ScenarioEndpoint(
        group_id=GROUP_ID,
        private_link_id=service_id,
        cloud_provider=provider.value,
        interface_endpoint_id=endpoint,
        **state,
    )


def v2_settings(atlas_url: str, **sections: Any) -> Settings:
    """settings_for with atlas.api_version v2, no retries, and fast cycles."""
    atlas = {"api_version": "v2", "timeout_seconds": 5, "max_retries": 0}
    atlas.update(sections.pop("atlas", {}))
    poll = {"interval_seconds": 0.2, **sections.pop("poll", {})}
    return settings_for(atlas_url, atlas=atlas, poll=poll, **sections)


class FakeClock:
    """The tests' one clock: it moves only when a test says so (``advance``, or setting
    ``now``); pass it wherever the code takes a ``clock``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
