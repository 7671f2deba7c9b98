"""Shared fixtures, as factories so each test says only what is special about it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
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
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import aioresponses.core as aioresponses_core
import pytest
import structlog
import yaml
from aioresponses import aioresponses
from pydantic import SecretStr
from yarl import URL

from monitor.atlas import ApiKey, AtlasClient
from monitor.atlas import pacing as pacing_module
from monitor.config import BASE_URL_ENV, Credentials, Settings, parse_config
from monitor.exposition import MonitorMetrics
from monitor.lifecycle import serve_on_stack
from monitor.polling.poller import Monitor, build_client
from monitor.polling.statestore import StateStore
from monitor.server import MONITOR, RUNTIME, create_app
from monitor.simulator import Scenario, ScenarioEndpoint, Simulator

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


@pytest.fixture
def run_virtually(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunVirtually[Any]]:
    """Runs a coroutine on a VirtualTimeLoop, with the Atlas client's monotonic clock (pacing,
    project pauses) on the same virtual time. The test itself is a plain function."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        virtual_clock = SimpleNamespace(
            monotonic=runner.get_loop().time, time=time.time, perf_counter=time.perf_counter
        )
        monkeypatch.setattr(pacing_module, "time", virtual_clock)
        yield runner.run


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a config document (or raw YAML text) to a file and return its path."""

    def write(document: dict[str, Any] | str | None = None, **sections: Any) -> Path:
        path = tmp_path / "config.yaml"
        if isinstance(document, str):
            path.write_text(document, encoding="utf-8")
        else:
            content = document if document is not None else config_document(**sections)
            path.write_text(yaml.safe_dump(content), encoding="utf-8")
        return path

    return write


@pytest.fixture
def credentials_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Valid credentials in the real environment, and no stray Atlas variables."""
    for name in (
        "MONGODB_ATLAS_PRIVATE_API_KEY_FILE",
        "MONGODB_ATLAS_BASE_URL",
        "ATLAS_MONITOR_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in CREDENTIALS_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(CREDENTIALS_ENV)


class _ResponseWithoutUpload(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument
    (pnuckowski/aioresponses#289); a mocked response has no upload, so a stub stands in."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked_atlas(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, working with the aiohttp this project pins."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _ResponseWithoutUpload)
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Commands configure structlog globally; each test starts from the defaults again."""
    yield
    structlog.reset_defaults()


StartSimulator = Callable[..., Awaitable[tuple[Simulator, str]]]


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Serve simulators on 127.0.0.1 with free ports; returns (simulator, base URL)."""
    async with contextlib.AsyncExitStack() as served:

        async def start(scenario: Scenario | None = None, **options: Any) -> tuple[Simulator, str]:
            simulator = Simulator(
                scenario or Scenario(), public_key=PUBLIC_KEY, private_key=PRIVATE_KEY, **options
            )
            return simulator, await serve_on_stack(served, simulator.app, "127.0.0.1", 0)

        yield start


@dataclass
class RunningDaemon:
    monitor: Monitor
    url: str


StartDaemon = Callable[..., Awaitable[RunningDaemon]]


@pytest.fixture
async def start_daemon(start_simulator: StartSimulator) -> AsyncIterator[StartDaemon]:
    """Serve the daemon app on a free 127.0.0.1 port, scheduler and all.

    It depends on ``start_simulator`` so that daemons stop before their simulators do.
    """
    async with contextlib.AsyncExitStack() as served:

        async def start(settings: Settings, **options: Any) -> RunningDaemon:
            app = create_app(settings, **options)
            url = await serve_on_stack(served, app, "127.0.0.1", 0, app[RUNTIME].tls)
            return RunningDaemon(app[MONITOR], url)

        yield start


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


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


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


@pytest.fixture
def simulator_process() -> Iterator[Callable[..., tuple[Process, str]]]:
    """`atlas-endpoint-monitor simulate` as a real child process on a free port."""
    started: list[Process] = []

    def start(*extra_args: str) -> tuple[Process, str]:
        process = Process(["simulate", "--port", "0", *extra_args], subprocess_env())
        started.append(process)
        line = process.wait_for_line(lambda text: "simulator_started" in text)
        return process, json.loads(line)["url"]

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.stop()
