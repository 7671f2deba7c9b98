"""Keeping the listener from eating the descriptors that polling Atlas needs.

Every connection to /metrics holds a file descriptor. A flood of idle or slowloris
connections (aiohttp keeps an idle one for an hour by default) used to take them all: at
``ulimit -n 1024`` the polls then failed with "Too many open files", which fired false
``unreachable`` alerts, and asyncio logged "socket.accept() out of system resource" over
200,000 times. So:

- a connection must finish its request headers, and an idle keep-alive connection send
  its next request, within KEEPALIVE_TIMEOUT_SECONDS (aiohttp's keep-alive timer runs from
  the moment a connection is accepted, so one setting covers both);
- the listener holds at most ``connection_cap`` connections, which leaves the polls and
  the process' own files their descriptors; a new connection beyond it closes the oldest
  one not being answered (idle, or still sending its headers), so a flood of idle
  connections cannot lock out a health probe; only when all are being answered is the
  new one refused;
- asyncio's accept error is logged once a minute at most (with how many there were), not
  per attempt.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger(__name__)

KEEPALIVE_TIMEOUT_SECONDS = 15.0
"""Shorter than any sensible scrape interval is fine: a scraper simply reconnects."""
RESERVED_DESCRIPTORS = 64
"""For everything but listener connections and Atlas connections: the standard streams, the
listening sockets, the state file, resolver and executor threads, a config being read."""
MAX_CONNECTIONS = 4096
"""However high the descriptor limit: an exporter has no use for more connections."""
MIN_CONNECTIONS = 16
ACCEPT_REPORT_SECONDS = 60.0
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
"""The message of asyncio's accept loop for EMFILE, ENFILE, ENOBUFS and ENOMEM."""


def connection_cap(atlas_connections: int, descriptor_limit: int | None = None) -> int:
    """How many connections the listener may hold, leaving ``atlas_connections`` and
    RESERVED_DESCRIPTORS descriptors of the soft RLIMIT_NOFILE for everything else."""
    if descriptor_limit is None:
        descriptor_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if descriptor_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    spare = descriptor_limit - atlas_connections - RESERVED_DESCRIPTORS
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, spare))


class ConnectionGuard:
    """Caps one aiohttp server's connections and reports the loop's accept errors.

    Its ``middleware`` (added to the app before it is frozen) tells connections being
    answered from idle ones, so that only an idle one (or one still sending its headers)
    is closed to make room; when every one is being answered, the new one is refused.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._answering: set[RequestHandler] = set()
        self._closing: set[RequestHandler] = set()
        """Connections closed to make room that may not have gone yet."""
        self._accept_failures = 0
        """Since the last listener_out_of_resources line."""
        self._last_report: float | None = None
        self.closed_for_room = 0
        self._default_handler: Callable[..., object] | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = request.protocol
        self._answering.add(connection)
        try:
            return await handler(request)
        finally:
            self._answering.discard(connection)

    def watch(self, server: web.Server) -> None:
        """Apply the cap to ``server``'s connections, and take over the loop's reports."""
        register = server.connection_made

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            register(handler, transport)
            self._admitted(server.connections)

        # aiohttp's Server offers no hook of its own for a new connection.
        server.connection_made = connection_made  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        self._default_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_exception)

    def _admitted(self, connections: list[RequestHandler]) -> None:
        """``connections`` (oldest first) has a new one at the end: make room if needed."""
        self._closing.intersection_update(connections)
        staying = [connection for connection in connections if connection not in self._closing]
        if len(staying) <= self._cap:
            return
        idle = [connection for connection in staying if connection not in self._answering]
        victim = idle[0] if idle else staying[-1]
        self._closing.add(victim)
        victim.force_close()
        self.closed_for_room += 1
        if self.closed_for_room == 1 or self.closed_for_room % 1000 == 0:
            log.warning(
                "listener_connection_cap_reached",
                cap=self._cap,
                connections_closed=self.closed_for_room,
            )

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_OUT_OF_RESOURCES:
            if self._default_handler is not None:
                self._default_handler(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        # asyncio accepts up to its backlog per loop turn, so a burst of connections
        # still meets the descriptor limit now and then: say so once a minute at most.
        self._accept_failures += 1
        now = time.monotonic()
        if self._last_report is not None and now - self._last_report < ACCEPT_REPORT_SECONDS:
            return
        log.error(
            "listener_out_of_resources",
            cause=str(context.get("exception")),
            failed_accepts=self._accept_failures,
            connection_cap=self._cap,
            hint="raise the descriptor limit (LimitNOFILE, ulimit -n); "
            f"repeats are counted and logged once per {ACCEPT_REPORT_SECONDS:g} s at most",
        )
        self._last_report = now
        self._accept_failures = 0
