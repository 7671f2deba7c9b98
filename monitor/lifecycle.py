"""Serving aiohttp apps until the operator's stop signal, the one way a long-running
command (``run``, ``simulate``, ``demo``) ends."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator

import structlog
from aiohttp import web

from monitor.connection_guard import KEEPALIVE_TIMEOUT_SECONDS, ConnectionGuard, connection_cap

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# In-flight HTTP requests (a scrape) get this long to finish once a stop signal arrives;
# together with the poll cycle's own stop timeout this keeps shutdown well under 10 s.
SHUTDOWN_GRACE_SECONDS = 2.0

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 1


class ListenError(Exception):
    """An address could not be bound: in use, not local, or not allowed."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


@contextlib.contextmanager
def stop_signal_received() -> Iterator[asyncio.Future[signal.Signals]]:
    """Yield a future that resolves to the first SIGINT or SIGTERM.

    Enter it before announcing readiness: a supervisor that reads "started" and at once
    sends SIGTERM must get a clean exit, not the default handler's abrupt death.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield received
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            if received.done():
                # Already stopping: a second Ctrl-C or SIGTERM while the interpreter winds
                # down must not turn a clean exit 0 into a kill.
                signal.signal(sig, signal.SIG_IGN)


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    *,
    atlas_connections: int = 0,
) -> web.AppRunner:
    """Run the app's startup hooks and listen (over TLS when given a context); the caller
    must ``await runner.cleanup()``.

    Its connections are capped and timed out so that they leave ``atlas_connections``
    descriptors to the app's own Atlas polls (see monitor.connection_guard).
    Raises ListenError (after cleaning up) when the address cannot be bound.
    """
    guard = ConnectionGuard(connection_cap(atlas_connections))
    app.middlewares.append(guard.middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
    )
    await runner.setup()
    assert runner.server is not None  # set up above
    guard.watch(runner.server)
    try:
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
    except OSError as error:
        await runner.cleanup()
        raise ListenError(host, port, error.strerror or str(error)) from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_url(runner: web.AppRunner, scheme: str = "http") -> str:
    """Base URL of the first listening socket, with the real port when 0 was asked for."""
    if not runner.addresses:
        raise ValueError("the runner has no listening socket")
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


StartServices = Callable[[contextlib.AsyncExitStack], Awaitable[None]]
"""Starts whatever a command serves, pushing each cleanup onto the stack it is given."""


async def serve_until_stopped(start: StartServices) -> int:
    """Start, serve until SIGINT/SIGTERM, clean up in reverse order, and return the exit code:
    0 after a signal, 1 when an address cannot be bound."""
    with stop_signal_received() as stopped:
        async with contextlib.AsyncExitStack() as services:
            try:
                await start(services)
            except ListenError as error:
                print(error, file=sys.stderr, flush=True)
                return EXIT_CANNOT_LISTEN
            received = await stopped
            log.info("stopping", signal=received.name)
    log.info("stopped")
    return EXIT_OK


async def serve_on_stack(
    services: contextlib.AsyncExitStack,
    app: web.Application,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    *,
    atlas_connections: int = 0,
) -> str:
    """``serve_app`` whose cleanup runs when ``services`` closes; returns the base URL."""
    runner = await serve_app(app, host, port, tls, atlas_connections=atlas_connections)
    services.push_async_callback(runner.cleanup)
    return bound_url(runner, "http" if tls is None else "https")
