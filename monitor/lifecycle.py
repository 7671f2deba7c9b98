"""Catching the operator's stop signal, the one way a long-running command ends."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator

import structlog

from monitor.simulator import Simulator, bound_url, serve

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


async def serve_simulator_until_stopped(
    simulator: Simulator, host: str, port: int, on_ready: Callable[[str], Awaitable[None]]
) -> int:
    """Serve until SIGINT/SIGTERM, then exit 0; 1 when the address cannot be bound.

    ``on_ready`` gets the real base URL (port 0 picks a free one) once requests are served.
    """
    with stop_signal_received() as stopped:
        try:
            runner = await serve(simulator, host, port)
        except OSError as error:
            print(f"cannot listen on {host}:{port}: {error.strerror or error}", file=sys.stderr)
            return 1
        try:
            await on_ready(bound_url(runner))
            received = await stopped
            log.info("simulator_stopping", signal=received.name)
        finally:
            await runner.cleanup()
    return 0
