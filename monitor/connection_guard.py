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
  one (at once when it is idle or still sending headers, after its response when it is
  being answered), so a flood of idle connections cannot lock out a health probe;
- asyncio's accept error is logged once per episode, not per attempt.
"""

from __future__ import annotations

import asyncio
import resource
import weakref
from typing import Any

import structlog
from aiohttp import web
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
    """Caps one aiohttp server's connections and reports the loop's accept errors."""

    def __init__(self, server: web.Server, cap: int) -> None:
        self._cap = cap
        self._server = server
        self._closing: weakref.WeakSet[RequestHandler] = weakref.WeakSet()
        self._accept_failures = 0
        self.evicted = 0
        register = server.connection_made

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            register(handler, transport)
            self._admitted()

        # aiohttp's Server offers no hook of its own for a new connection.
        server.connection_made = connection_made  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        self._default_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_exception)

    def _admitted(self) -> None:
        if self._accept_failures:
            log.info("listener_accepting_again", failed_accepts=self._accept_failures)
            self._accept_failures = 0
        open_connections = [
            connection for connection in self._server.connections if connection not in self._closing
        ]  # oldest first
        if len(open_connections) <= self._cap:
            return
        oldest = open_connections[0]
        self._closing.add(oldest)
        oldest.close()  # idle or sending headers: now; being answered: after its response
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 1000 == 0:
            log.warning(
                "listener_connection_cap_reached",
                cap=self._cap,
                oldest_connections_closed=self.evicted,
            )

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_OUT_OF_RESOURCES:
            if self._default_handler is not None:
                self._default_handler(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._accept_failures += 1
        if self._accept_failures == 1:
            log.error(
                "listener_out_of_resources",
                cause=str(context.get("exception")),
                connection_cap=self._cap,
                hint="raise the descriptor limit (LimitNOFILE, ulimit -n); "
                "repeats are not logged until a connection is accepted again",
            )
