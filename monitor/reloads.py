"""Config reload requests merged into as few reloads as keep every answer true.

A storm of requests (a burst of SIGHUPs, concurrent ``POST /-/reload``) used to cost one
whole reload each, one after the other, with the YAML parsed on the event loop: at 10,000
endpoints that kept /healthz and polling waiting for tens of seconds, and a SIGTERM behind
them. Here at most one reload runs; every request arriving meanwhile joins the one reload
that starts when it ends. That reload reads the config as it is by then, so every requester
still gets the outcome of a reload that started after it asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

STOPPING = "the daemon is stopping"

Result = TypeVar("Result")

Reload = Callable[[str, int], Awaitable[list[str]]]
"""Reloads once for the merged triggers (e.g. "SIGHUP,http") of this many requests; returns
the problems that kept the old config (none: applied)."""


@dataclass
class _Batch:
    """Requests that will be answered by the same reload."""

    answer: asyncio.Future[list[str]]
    triggers: list[str] = field(default_factory=list)


class ReloadQueue:
    """One reload at a time; the requests made while it runs share the next one."""

    def __init__(self, reload: Reload) -> None:
        self._reload = reload
        self._next: _Batch | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def request(self, trigger: str) -> asyncio.Future[list[str]]:
        """Ask for a reload; the future holds its problems (none: applied). Await it
        shielded: a requester that goes away must not cancel the others' answer."""
        loop = asyncio.get_running_loop()
        if self._closed:
            answer: asyncio.Future[list[str]] = loop.create_future()
            answer.set_result([STOPPING])
            return answer
        if self._next is None:
            self._next = _Batch(loop.create_future())
        self._next.triggers.append(trigger)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work())
        return self._next.answer

    async def close(self) -> None:
        """Refuse new requests, answer the waiting ones with STOPPING, and wait for the
        reload under way (whose owner makes it quick to end, see Runtime.stop)."""
        self._closed = True
        batch, self._next = self._next, None
        if batch is not None:
            batch.answer.set_result([STOPPING])
        if self._worker is not None:
            await asyncio.wait({self._worker})

    async def _work(self) -> None:
        try:
            while self._next is not None:
                batch, self._next = self._next, None
                trigger = ",".join(dict.fromkeys(batch.triggers))
                try:
                    problems = await self._reload(trigger, len(batch.triggers))
                except Exception:
                    log.exception("config_reload_crashed", trigger=trigger)
                    problems = ["the reload failed unexpectedly; the log says why"]
                batch.answer.set_result(problems)
        finally:
            self._worker = None


def in_daemon_thread(function: Callable[[], Result]) -> asyncio.Future[Result]:
    """``function()`` in a thread of its own, as a future of this loop.

    Unlike ``asyncio.to_thread``, the thread is a daemon one outside the default executor,
    which ``asyncio.run`` joins at the end: cancelling the future abandons the work, and a
    shutdown never waits for it (a config parse may take seconds).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Result] = loop.create_future()

    def settle(outcome: Callable[[], object]) -> None:
        if not future.done():  # not cancelled meanwhile
            outcome()

    def run() -> None:
        outcome: Callable[[], object]
        try:
            result = function()
        except BaseException as error:
            outcome = functools.partial(future.set_exception, error)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="config-parse", daemon=True).start()
    return future
