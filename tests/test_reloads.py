"""Reload requests merged: one reload at a time, the requests made meanwhile share the next."""

from __future__ import annotations

import asyncio
import threading

import pytest

from monitor.reloads import STOPPING, ReloadQueue, in_daemon_thread


class GatedReloads:
    """A reload that records its trigger and request count, then waits to be let through."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, trigger: str, requests: int) -> list[str]:
        self.calls.append((trigger, requests))
        self.started.set()
        await self.gate.wait()
        self.gate.clear()
        return [] if trigger != "bad" else ["config: bad"]


async def test_requests_made_while_a_reload_runs_share_the_next_reload() -> None:
    reloads = GatedReloads()
    queue = ReloadQueue(reloads)
    first = queue.request("http")
    await asyncio.wait_for(reloads.started.wait(), 5)
    waiting = [queue.request(trigger) for trigger in ["SIGHUP"] * 200 + ["http"] * 9]
    reloads.gate.set()
    assert await asyncio.wait_for(first, 5) == []
    assert not any(answer.done() for answer in waiting)
    reloads.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert answers == [[]] * len(waiting)
    assert reloads.calls == [("http", 1), ("SIGHUP,http", 209)]


async def test_closing_answers_the_waiting_requests_and_refuses_new_ones() -> None:
    reloads = GatedReloads()
    queue = ReloadQueue(reloads)
    running = queue.request("SIGHUP")
    await asyncio.wait_for(reloads.started.wait(), 5)
    waiting = queue.request("http")
    closing = asyncio.create_task(queue.close())
    assert await asyncio.wait_for(waiting, 5) == [STOPPING]
    assert not closing.done(), "close waits for the reload under way"
    reloads.gate.set()
    await asyncio.wait_for(closing, 5)
    assert await running == []
    assert await queue.request("http") == [STOPPING]
    assert reloads.calls == [("SIGHUP", 1)]


async def test_a_crashing_reload_is_an_answer_not_a_dead_queue() -> None:
    calls = []

    async def reload(trigger: str, requests: int) -> list[str]:
        calls.append(trigger)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return []

    queue = ReloadQueue(reload)
    assert await asyncio.wait_for(queue.request("SIGHUP"), 5) == [
        "the reload failed unexpectedly; the log says why"
    ]
    assert await asyncio.wait_for(queue.request("SIGHUP"), 5) == []


async def test_a_daemon_thread_runs_the_work_off_the_loop_and_can_be_abandoned() -> None:
    release = threading.Event()
    loop_thread = threading.get_ident()

    def parse() -> int:
        assert threading.get_ident() != loop_thread
        assert threading.current_thread().daemon
        release.wait(5)
        return 42

    abandoned = in_daemon_thread(parse)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    release.set()
    assert await asyncio.wait_for(in_daemon_thread(parse), 5) == 42

    def fail() -> int:
        raise ValueError("bad yaml")

    with pytest.raises(ValueError, match="bad yaml"):
        await asyncio.wait_for(in_daemon_thread(fail), 5)
