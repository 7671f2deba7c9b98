"""The listener under a flood of idle and slowloris connections, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from monitor import lifecycle
from monitor.connection_guard import (
    MAX_CONNECTIONS,
    MIN_CONNECTIONS,
    RESERVED_DESCRIPTORS,
    connection_cap,
)
from monitor.simulator import Scenario
from tests.helpers import (
    HEALTHY,
    StartDaemon,
    StartSimulator,
    events_in,
    fetch,
    settings_for,
    simulated,
)


def test_the_cap_leaves_descriptors_for_atlas_and_the_process() -> None:
    assert connection_cap(8, descriptor_limit=1024) == 1024 - 8 - RESERVED_DESCRIPTORS
    assert connection_cap(8, descriptor_limit=80) == MIN_CONNECTIONS
    assert connection_cap(8, descriptor_limit=1_048_576) == MAX_CONNECTIONS
    assert connection_cap(8, descriptor_limit=resource.RLIM_INFINITY) == MAX_CONNECTIONS


HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: monitor\r\n"
"""Half a request's headers: a slowloris."""


@contextlib.asynccontextmanager
async def connections(
    url: str, count: int, sent: bytes = HALF_SENT
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections that send ``sent`` and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    opened = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(sent)
            opened.append((reader, writer))
        yield [reader for reader, _ in opened]
    finally:
        for _, writer in opened:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def closed_by_the_daemon(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except TimeoutError:
        return False


async def test_connections_beyond_the_cap_close_the_oldest_so_a_probe_still_gets_in(
    start_simulator: StartSimulator, start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "connection_cap", lambda atlas_connections: 5)
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    with capture_logs() as logs:
        async with connections(daemon.url, 12) as idle:
            status, _, body = await asyncio.wait_for(fetch(f"{daemon.url}/healthz"), 5)
            closed = [await closed_by_the_daemon(reader, 0.5) for reader in idle]
    assert (status, body) == (200, "ok\n")
    # 12 idle ones and the probe against a cap of 5: the 8 oldest made room.
    assert closed == [True] * 8 + [False] * 4
    (cap_reached,) = events_in(logs, "listener_connection_cap_reached")
    assert cap_reached["cap"] == 5


async def test_a_connection_that_never_finishes_its_headers_is_closed_after_the_timeout(
    start_simulator: StartSimulator, start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "KEEPALIVE_TIMEOUT_SECONDS", 0.5)
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    async with connections(daemon.url, 1) as (slowloris,):
        assert await closed_by_the_daemon(slowloris, 5)


async def test_a_kept_alive_connection_left_idle_after_its_request_is_closed_after_the_timeout(
    start_simulator: StartSimulator, start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "KEEPALIVE_TIMEOUT_SECONDS", 0.5)
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    request = b"GET /healthz HTTP/1.1\r\nHost: monitor\r\nConnection: keep-alive\r\n\r\n"
    async with connections(daemon.url, 1, request) as (kept_alive,):
        head = await asyncio.wait_for(kept_alive.readuntil(b"\r\n\r\n"), 5)
        body = await asyncio.wait_for(kept_alive.readexactly(len(b"ok\n")), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"ok\n"
        assert await closed_by_the_daemon(kept_alive, 5)
