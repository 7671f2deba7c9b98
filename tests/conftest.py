"""Shared fixtures only, as factories so each test says only what is special about it;
the helpers they build on are in tests/helpers.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioresponses.core as aioresponses_core
import pytest
import structlog
import yaml
from aioresponses import aioresponses

from monitor.atlas import pacing as pacing_module
from monitor.config import Settings
from monitor.lifecycle import serve_on_stack
from monitor.server import MONITOR, RUNTIME, create_app
from monitor.simulator import Scenario, Simulator
from tests.helpers import (
    CREDENTIALS_ENV,
    PRIVATE_KEY,
    PUBLIC_KEY,
    WARNINGS_ENV,
    Process,
    ResponseWithoutUpload,
    RunningDaemon,
    RunVirtually,
    StartDaemon,
    StartSimulator,
    VirtualTimeLoop,
    WriteConfig,
    config_document,
    deployment_tool,
    subprocess_env,
)


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


@pytest.fixture
def mocked_atlas(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, working with the aiohttp this project pins."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", ResponseWithoutUpload)
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Commands configure structlog globally; each test starts from the defaults again."""
    yield
    structlog.reset_defaults()


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Serve simulators on 127.0.0.1 with free ports; returns (simulator, base URL)."""
    async with contextlib.AsyncExitStack() as served:

        async def start(scenario: Scenario | None = None, **options: Any) -> tuple[Simulator, str]:
            """``options`` go to Simulator (clock, sleep, client_id...); the keys default to
            the tests' own."""
            keys = {"public_key": PUBLIC_KEY, "private_key": PRIVATE_KEY}
            simulator = Simulator(scenario or Scenario(), **{**keys, **options})
            return simulator, await serve_on_stack(served, simulator.app, "127.0.0.1", 0)

        yield start


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


@pytest.fixture
def children() -> Iterator[Callable[..., Process]]:
    """Start `python -m monitor ...` children; whatever is still running at the end is
    killed (these tests assert on their own stops, never on the teardown's)."""
    started: list[Process] = []

    def start(args: list[str], **env: str) -> Process:
        child = Process(args, subprocess_env(**WARNINGS_ENV, **env))
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


@pytest.fixture
def prometheus_binary() -> str:
    return deployment_tool("prometheus", "prometheus")
