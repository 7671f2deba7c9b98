#!/usr/bin/env python3
"""Soak benchmark: does the daemon stay flat when it runs for a long time and Atlas misbehaves?

Why
---
The daemon is meant to run for months. A leak of one asyncio task, one socket or a few hundred
bytes per poll, per failed request or per scrape is invisible to the unit tests but fatal in
production: 500 endpoints polled every second are 43 million polls a day. This script squeezes
that into minutes. It polls many endpoints at a short interval, makes the fake Atlas walk every
error path the client has (429 with and without Retry-After, 5xx, answers slower than the
timeout, dropped connections, bodies cut off mid-way, malformed JSON, HTML, wrong shapes, 401s,
outages long enough to fire ``unreachable``; ``--fault-kinds`` picks a subset), flips
endpoint statuses so that alerts fire and resolve, scrapes ``/metrics`` like Prometheus, and
watches what the process holds: RSS, open file descriptors, asyncio tasks and gc objects.

How
---
The fake Atlas (``python -m monitor simulate`` on a generated scenario) runs as a separate
process, so its memory and CPU are never mistaken for the daemon's. The real daemon
(``monitor.server.create_app``, the app ``atlas-endpoint-monitor run`` serves) runs in this
process, on a free 127.0.0.1 port, where ``/proc/self`` tells what it holds. Faults and status
changes go through the simulator's unauthenticated control routes (``/_simulator/...``).

A probe every second reads RSS (``VmRSS``), open fds (``/proc/self/fd``) and the asyncio tasks;
every ``--sample-every`` seconds one line is printed: the median RSS of the period's probes,
the lowest and highest fd and task counts they saw, the most poll-cycle workers at once (they
come and go with every cycle, bounded by ``poll.concurrency``, so they are counted apart from
the other tasks), gc-tracked objects, CPU of this process, poll cycles completed and skipped
and their mean duration, Atlas requests and firing alert lines so far (from the daemon's own
/metrics), the period's slowest scrape, and the simulator's RSS and CPU.

The summary compares the first sample at or after the warm-up with the last one and gives a
verdict against the target: after the warm-up, RSS grows less than ``--max-rss-growth`` percent
(5); open fds and tasks stay flat: their highest count never exceeds the first post-warm-up
sample's highest by more than ``--fd-tolerance`` / ``--task-tolerance``, and the least-squares
trends of the per-sample lows and highs over the window stay under half of that; the poll
workers never exceed ``poll.concurrency``. The RSS slope (least squares over the post-warm-up
samples, KiB/min) is reported too. Cycles per minute are reported, not judged: a cycle lasts
as long as its slowest endpoint, so at the default fault rate nearly every cycle waits for a
retry, a timeout or a project's 429 pause (``--fault-rate 0`` shows what the daemon does when
Atlas behaves). ``--tracemalloc`` compares snapshots taken at the end of the warm-up and at the
end, to name the lines that grew (tracemalloc slows the daemon down several times and its own
bookkeeping adds to RSS, so use it to find a leak, not to measure one).

The bench's own tasks (scraper, injector, sampler, simulator watch) and sessions live in this
process too; they are constant and hold nothing per request.

Run it from the repository root with the project's venv::

    .venv/bin/python bench/soak.py --endpoints 500 --interval 1 --duration 600 --sample-every 5

    .venv/bin/python bench/soak.py --duration 60 --warmup 15         # a one-minute smoke run
    .venv/bin/python bench/soak.py --duration 300 --tracemalloc      # name what grows

Ctrl-C (or SIGTERM) ends the run early: the summary of what was measured is printed, the
daemon and the simulator are stopped, and the exit status is 130. Otherwise it is 0 for PASS,
1 for FAIL and 2 when the run could not be set up. The generated scenario, the daemon's log
(level warning; alert lines are written whatever the level) and the simulator's log are kept
in a temporary directory named in the header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from harness import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    SCRAPE_ACCEPT,
    SimulatorChild,
    check_bounds,
    code_revision,
    cpu_ticks,
    ids_of,
    machine_description,
    proc_status_kib,
    write_scenario,
)
from pydantic import SecretStr

from monitor.atlas import ApiKey
from monitor.config import BASE_URL_ENV, Credentials, Settings, parse_config
from monitor.lifecycle import serve_on_stack, stop_signal_received
from monitor.logs import configure_logging
from monitor.polling.poller import Monitor
from monitor.server import MONITOR, create_app

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

# Daemon alert rules, short enough that a 10-minute run fires (and resolves) each kind.
UNREACHABLE_AFTER_FAILURES = 2
STUCK_AFTER_SECONDS = 120.0
REPEAT_INTERVAL_SECONDS = 300.0
NONCE_LIFETIME_SECONDS = 120.0
"""The simulator's: the daemon's Digest session meets stale nonces a few times per run."""

CONTROL_TIMEOUT = aiohttp.ClientTimeout(total=10)


# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class Endpoint:
    number: int
    group_id: str
    private_link_id: str
    interface_endpoint_id: str

    def ids(self) -> dict[str, str]:
        return {
            "group_id": self.group_id,
            "private_link_id": self.private_link_id,
            "interface_endpoint_id": self.interface_endpoint_id,
        }

    def control_path(self) -> str:
        return (
            f"/_simulator/endpoints/{self.group_id}/{self.private_link_id}/"
            f"{self.interface_endpoint_id}"
        )


def make_fleet(count: int, projects: int) -> list[Endpoint]:
    """``count`` endpoints spread round-robin over ``projects`` Atlas projects (group ids),
    one private endpoint service each."""
    return [Endpoint(number, *ids_of(number - 1, projects)) for number in range(1, count + 1)]


def _error_message(endpoint: Endpoint, rng: random.Random) -> str:
    zone = rng.randint(1, 6)
    return (
        f"Interface endpoint {endpoint.interface_endpoint_id} has no subnet in availability "
        f"zone use1-az{zone} used by the cluster"
    )


def scenario_entry(endpoint: Endpoint, rng: random.Random) -> dict[str, Any]:
    """Mostly AVAILABLE; some REJECTED, with an errorMessage, pending (on their way to
    AVAILABLE, or stuck), unknown to Atlas for a while, or in a status Atlas may add later."""
    entry: dict[str, Any] = endpoint.ids()
    roll = rng.random()
    if roll < 0.80:
        entry["status"] = "AVAILABLE"
    elif roll < 0.85:
        entry["status"] = "REJECTED"
    elif roll < 0.89:
        entry.update(status="AVAILABLE", error_message=_error_message(endpoint, rng))
    elif roll < 0.93:
        accepted = round(rng.uniform(5, 120), 1)
        entry.update(
            status="PENDING_ACCEPTANCE",
            timeline=[
                {"after_seconds": accepted, "status": "PENDING"},
                {"after_seconds": accepted + round(rng.uniform(20, 200), 1), "status": "AVAILABLE"},
            ],
        )
    elif roll < 0.96:
        entry["status"] = "PENDING"  # stays there: fires "stuck"
    elif roll < 0.98:
        entry.update(
            exists=False,
            timeline=[{"after_seconds": round(rng.uniform(30, 300), 1), "exists": True}],
        )
    else:
        entry["status"] = "FAILED_OVER"  # not in Atlas' list: UNKNOWN
    return entry


def daemon_settings(args: argparse.Namespace, fleet: Sequence[Endpoint], base_url: str) -> Settings:
    document = {
        "atlas": {"timeout_seconds": args.timeout, "max_retries": args.max_retries},
        "poll": {"interval_seconds": args.interval, "concurrency": args.concurrency},
        "server": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "warning", "format": "json"},
        "alerts": {
            "unreachable_after_failures": UNREACHABLE_AFTER_FAILURES,
            "stuck_after_seconds": STUCK_AFTER_SECONDS,
            "repeat_interval_seconds": REPEAT_INTERVAL_SECONDS,
        },
        "endpoints": [
            {
                **endpoint.ids(),
                "name": f"soak-{endpoint.number}",
                "labels": {"team": f"team-{endpoint.number % 7}", "tier": "soak"},
            }
            for endpoint in fleet
        ],
    }
    config = parse_config(document, {BASE_URL_ENV: base_url})
    credentials = Credentials(ApiKey(PUBLIC_KEY, SecretStr(PRIVATE_KEY)), "the soak benchmark")
    return Settings(config=config, credentials=credentials, source=Path("bench/soak.py"))


# --------------------------------------------------------------------------- faults and flips

FaultFactory = Callable[[random.Random], dict[str, Any]]


def fault_kinds(timeout: float, max_retries: int) -> list[tuple[str, int, FaultFactory]]:
    """(name, weight, fault as the simulator's control route takes it). Each has a small
    ``times``, so it is used up within a cycle or two; ``outage`` lasts exactly long enough
    for ``unreachable`` to fire, so it resolves again too."""
    outage_times = (max_retries + 1) * UNREACHABLE_AFTER_FAILURES
    return [
        ("429", 12, lambda rng: {"status": 429, "retry_after": rng.choice((1, 2)), "times": 1}),
        ("429-bare", 4, lambda rng: {"status": 429, "times": 1}),
        ("500", 12, lambda rng: {"status": 500, "times": rng.randint(1, 2)}),
        ("503", 12, lambda rng: {"status": 503, "times": rng.randint(1, 3)}),
        ("outage", 6, lambda rng: {"status": 503, "times": outage_times}),
        ("slow", 12, lambda rng: {"latency_seconds": timeout + 0.5, "times": 1}),
        # aiohttp resends a GET once on a dropped connection, so 2 drops reach the client.
        ("drop", 12, lambda rng: {"drop_connection": True, "times": 2}),
        ("malformed", 12, lambda rng: {"body": '{"interfaceEndpointId": ', "times": 1}),
        # Headers with the full Content-Length, half the body, then a closed connection.
        ("truncated", 8, lambda rng: {"truncate_body": True, "times": 1}),
        (
            "html",
            6,
            lambda rng: {"body": "<html>proxy</html>", "content_type": "text/html", "times": 1},
        ),
        (
            "shape",
            6,
            lambda rng: {"body": '{"interfaceEndpointId": 42, "connectionStatus": 1}', "times": 1},
        ),
        ("401", 4, lambda rng: {"status": 401, "times": 1}),
        ("502", 6, lambda rng: {"status": 502, "times": 1}),
    ]


FlipFactory = Callable[[Endpoint, random.Random], dict[str, Any] | None]
"""The PUT body for the endpoint, or None for a DELETE (Atlas answers 404 until a PUT)."""

FLIP_KINDS: list[tuple[str, int, FlipFactory]] = [
    ("available", 60, lambda endpoint, rng: {"status": "AVAILABLE"}),
    ("rejected", 10, lambda endpoint, rng: {"status": "REJECTED"}),
    (
        "error_message",
        10,
        lambda endpoint, rng: {
            "status": "AVAILABLE",
            "error_message": _error_message(endpoint, rng),
        },
    ),
    ("pending", 6, lambda endpoint, rng: {"status": "PENDING_ACCEPTANCE"}),
    ("unknown", 4, lambda endpoint, rng: {"status": "FAILED_OVER"}),
    ("deleting", 4, lambda endpoint, rng: {"status": "DELETING", "delete_requested": True}),
    ("removed", 6, lambda endpoint, rng: None),
]


def weighted_choice(rng: random.Random, kinds: Sequence[tuple[str, int, Any]]) -> tuple[str, Any]:
    name, _, factory = rng.choices(kinds, weights=[weight for _, weight, _ in kinds])[0]
    return name, factory


@dataclass
class Injections:
    faults: Counter[str] = field(default_factory=Counter)
    flips: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    last_failure: str | None = None


async def _control(session: aiohttp.ClientSession, method: str, url: str, body: object) -> str:
    """Empty string on success, else why not."""
    try:
        async with session.request(method, url, json=body) as response:
            await response.read()
            if response.status != 204:
                return f"{method} {url}: HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as error:
        return f"{method} {url}: {type(error).__name__}: {error}"
    return ""


async def inject(
    session: aiohttp.ClientSession,
    simulator_url: str,
    fleet: Sequence[Endpoint],
    args: argparse.Namespace,
    rng: random.Random,
    injections: Injections,
) -> None:
    """Every second, each endpoint gets a fault with probability ``fault_rate`` per sample
    period (pro rata) and a status change with ``flip_rate`` likewise."""
    faults = [
        kind for kind in fault_kinds(args.timeout, args.max_retries) if kind[0] in args.fault_kinds
    ]
    fault_chance = args.fault_rate / args.sample_every
    flip_chance = args.flip_rate / args.sample_every
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    while True:
        next_tick += 1.0
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        for endpoint in fleet:
            url = simulator_url + endpoint.control_path()
            if rng.random() < fault_chance:
                name, make_fault = weighted_choice(rng, faults)
                injections.faults[name] += 1
                problem = await _control(session, "POST", url + "/faults", make_fault(rng))
                _note(injections, problem)
            if rng.random() < flip_chance:
                name, make_body = weighted_choice(rng, FLIP_KINDS)
                injections.flips[name] += 1
                body = make_body(endpoint, rng)
                method = "DELETE" if body is None else "PUT"
                _note(injections, await _control(session, method, url, body))


def _note(injections: Injections, problem: str) -> None:
    if problem:
        injections.failed += 1
        injections.last_failure = problem


# --------------------------------------------------------------------------- scraping


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class DaemonFigures:
    """What the daemon's own /metrics says, from the latest scrape."""

    requests_by_code: Counter[str] = field(default_factory=Counter)
    alerts_by_name: Counter[str] = field(default_factory=Counter)
    cycles_skipped: float = 0.0
    cycle_seconds_sum: float = 0.0
    cycle_count: float = 0.0
    endpoints_up: int = 0
    alerts_firing: int = 0

    @property
    def requests(self) -> float:
        return float(sum(self.requests_by_code.values()))

    @property
    def alerts(self) -> float:
        return float(sum(self.alerts_by_name.values()))


def _sample_value(line: str) -> float:
    return float(line.rpartition(" ")[2])


def _label(line: str, name: str) -> str:
    for label, value in _LABEL.findall(line.partition("{")[2].rpartition("}")[0]):
        if label == name:
            return str(value)
    return ""


def parse_scrape(text: str) -> DaemonFigures:
    figures = DaemonFigures()
    for line in text.splitlines():
        if line.startswith("atlas_monitor_api_requests_total{"):
            figures.requests_by_code[_label(line, "code")] += int(_sample_value(line))
        elif line.startswith("atlas_monitor_alerts_total{"):
            figures.alerts_by_name[_label(line, "alert")] += int(_sample_value(line))
        elif line.startswith("atlas_monitor_poll_cycles_skipped_total"):
            figures.cycles_skipped = _sample_value(line)
        elif line.startswith("atlas_monitor_poll_cycle_duration_seconds_sum"):
            figures.cycle_seconds_sum = _sample_value(line)
        elif line.startswith("atlas_monitor_poll_cycle_duration_seconds_count"):
            figures.cycle_count = _sample_value(line)
        elif line.startswith("atlas_interface_endpoint_up{"):
            figures.endpoints_up += _sample_value(line) == 1
        elif line.startswith("atlas_interface_endpoint_alert_firing{"):
            figures.alerts_firing += _sample_value(line) == 1
    return figures


@dataclass
class Scrapes:
    ok: int = 0
    failed: int = 0
    last_failure: str | None = None
    seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    slowest_in_period: float = 0.0
    latest: DaemonFigures = field(default_factory=DaemonFigures)


async def scrape(
    session: aiohttp.ClientSession, daemon_url: str, every: float, scrapes: Scrapes
) -> None:
    """GET /metrics every ``every`` seconds, as Prometheus would (OpenMetrics, gzip)."""
    headers = {"Accept": SCRAPE_ACCEPT, "Accept-Encoding": "gzip"}
    loop = asyncio.get_running_loop()
    # Half a period out of phase with the sampler's probes, so RSS is not read mid-scrape.
    next_scrape = loop.time() + every / 2
    await asyncio.sleep(every / 2)
    while True:
        started = time.perf_counter()
        try:
            async with session.get(daemon_url + "/metrics", headers=headers) as response:
                text = await response.text()
                if response.status != 200:
                    raise aiohttp.ClientError(f"HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as error:
            scrapes.failed += 1
            scrapes.last_failure = f"{type(error).__name__}: {error}"
        else:
            elapsed = time.perf_counter() - started
            scrapes.ok += 1
            scrapes.seconds.append(elapsed)
            scrapes.slowest_in_period = max(scrapes.slowest_in_period, elapsed)
            scrapes.latest = parse_scrape(text)
        next_scrape += every
        await asyncio.sleep(max(0.0, next_scrape - loop.time()))


# --------------------------------------------------------------------------- sampling


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


POLL_WORKER = "for_each_by_project.<locals>.lane_worker"
"""The coroutine of ``polling.poller.for_each_by_project``'s workers: ``poll.concurrency`` of
them (plus one per project too small for a share) exist while a cycle runs, fewer in its tail,
none between cycles."""


def task_census() -> Counter[str]:
    """Live asyncio tasks by the qualified name of their coroutine."""
    census: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        census[getattr(coro, "__qualname__", type(coro).__name__)] += 1
    return census


@dataclass(frozen=True)
class Sample:
    t: float
    rss_kib: int
    """The median of the period's 1 s probes: a scrape or a cycle in flight holds a few MB."""
    fds_low: int
    fds_high: int
    tasks_low: int
    tasks_high: int
    """Tasks other than the poll cycle's workers, which come and go with every cycle."""
    workers_high: int
    gc_objects: int
    cpu_percent: float
    cycles: int
    cycles_skipped: float
    mean_cycle_seconds: float
    """Of the cycles that finished in the period, per the daemon's histogram."""
    requests: float
    alerts: float
    slowest_scrape_ms: float
    simulator_rss_kib: int | None
    simulator_cpu_percent: float


SAMPLE_HEADER = (
    f"{'t[s]':>6} {'rss[KiB]':>9} {'rss%':>6} {'fds lo-hi':>10} {'tasks lo-hi':>11} {'wkrs':>4} "
    f"{'gc objs':>8} {'cpu%':>5} {'cycles':>6} {'skip':>5} {'cycle s':>7} {'requests':>9} "
    f"{'alerts':>7} {'scrape ms':>9} {'sim rss':>8} {'sim cpu%':>8}"
)


def format_sample(sample: Sample, baseline_kib: int) -> str:
    growth = (sample.rss_kib - baseline_kib) / baseline_kib * 100
    simulator = "-" if sample.simulator_rss_kib is None else str(sample.simulator_rss_kib)
    return (
        f"{sample.t:6.0f} {sample.rss_kib:9d} {growth:+6.1f} "
        f"{f'{sample.fds_low}-{sample.fds_high}':>10} "
        f"{f'{sample.tasks_low}-{sample.tasks_high}':>11} {sample.workers_high:4d} "
        f"{sample.gc_objects:8d} "
        f"{sample.cpu_percent:5.0f} {sample.cycles:6d} {sample.cycles_skipped:5.0f} "
        f"{sample.mean_cycle_seconds:7.2f} {sample.requests:9.0f} {sample.alerts:7.0f} "
        f"{sample.slowest_scrape_ms:9.1f} {simulator:>8} {sample.simulator_cpu_percent:8.0f}"
    )


class LeakTracer:
    """tracemalloc snapshots at the end of the warm-up and at the end, compared."""

    FRAMES = 12

    def __init__(self) -> None:
        self.warm: tracemalloc.Snapshot | None = None
        self.warm_traced = 0
        tracemalloc.start(self.FRAMES)

    def take_warm(self) -> None:
        self.warm = self.snapshot()
        self.warm_traced = tracemalloc.get_traced_memory()[0]

    @staticmethod
    def snapshot() -> tracemalloc.Snapshot:
        gc.collect()  # garbage that merely awaits the cycle collector is no leak
        return tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
                tracemalloc.Filter(False, "<unknown>"),
            )
        )

    def report(self, out: TextIO, top: int = 15) -> None:
        current, peak = tracemalloc.get_traced_memory()
        print(
            f"\ntracemalloc: {current / 1024:,.0f} KiB traced now, peak {peak / 1024:,.0f} KiB",
            file=out,
        )
        if self.warm is None:
            print("  no snapshot at the end of the warm-up (run too short)", file=out)
            return
        end = self.snapshot()
        net = sum(stat.size_diff for stat in end.compare_to(self.warm, "filename"))
        print(
            f"  at the end of the warm-up {self.warm_traced / 1024:,.0f} KiB traced; net growth "
            f"of the snapshots since: {net / 1024:+,.1f} KiB",
            file=out,
        )
        by_line = [s for s in end.compare_to(self.warm, "lineno") if s.size_diff > 0]
        print(f"  top {top} lines by growth since the end of the warm-up:", file=out)
        for stat in by_line[:top]:
            frame = stat.traceback[0]
            print(
                f"  {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks "
                f"(now {stat.size / 1024:,.1f} KiB)  {frame.filename}:{frame.lineno}",
                file=out,
            )
        by_trace = [s for s in end.compare_to(self.warm, "traceback") if s.size_diff > 0]
        for stat in by_trace[:3]:
            print(
                f"  traceback of {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks:",
                file=out,
            )
            for line in stat.traceback.format(most_recent_first=True)[:16]:
                print(f"    {line}", file=out)


@dataclass
class Run:
    """Everything measured; filled in as the run goes."""

    t0: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    census_after_warmup: Counter[str] | None = None
    census_end: Counter[str] | None = None


async def sample(
    monitor: Monitor,
    simulator_pid: int,
    args: argparse.Namespace,
    run: Run,
    scrapes: Scrapes,
    tracer: LeakTracer | None,
    out: TextIO,
) -> None:
    """Probe fds and tasks about every second; emit a sample every ``sample_every`` s."""
    probes_per_sample = max(1, round(args.sample_every))
    probe_every = args.sample_every / probes_per_sample
    loop = asyncio.get_running_loop()
    cpu_before, wall_before = cpu_seconds(), time.monotonic()
    child_ticks_before = cpu_ticks(simulator_pid) or 0
    cycles_before = (0.0, 0.0)
    clock_ticks = os.sysconf("SC_CLK_TCK")
    tick = 0
    print(SAMPLE_HEADER, file=out, flush=True)
    while True:
        fds: list[int] = []
        rss: list[int] = []
        tasks: list[int] = []
        workers: list[int] = []
        census: Counter[str] = Counter()
        for _ in range(probes_per_sample):
            tick += 1
            await asyncio.sleep(max(0.0, run.t0 + tick * probe_every - loop.time()))
            fds.append(open_fds())
            rss.append(proc_status_kib("self", "VmRSS") or 0)
            census = task_census()
            workers.append(census[POLL_WORKER])
            tasks.append(census.total() - census[POLL_WORKER])
        cpu_now, wall_now = cpu_seconds(), time.monotonic()
        child_ticks = cpu_ticks(simulator_pid) or child_ticks_before
        figures = scrapes.latest
        cycles_now = (figures.cycle_seconds_sum, figures.cycle_count)
        finished = cycles_now[1] - cycles_before[1]
        entry = Sample(
            t=loop.time() - run.t0,
            rss_kib=int(statistics.median(rss)),
            fds_low=min(fds),
            fds_high=max(fds),
            tasks_low=min(tasks),
            tasks_high=max(tasks),
            workers_high=max(workers),
            gc_objects=len(gc.get_objects()),
            cpu_percent=(cpu_now - cpu_before) / (wall_now - wall_before) * 100,
            cycles=monitor.cycles_completed,
            cycles_skipped=figures.cycles_skipped,
            mean_cycle_seconds=(cycles_now[0] - cycles_before[0]) / finished if finished else 0,
            requests=figures.requests,
            alerts=figures.alerts,
            slowest_scrape_ms=scrapes.slowest_in_period * 1000,
            simulator_rss_kib=proc_status_kib(simulator_pid, "VmRSS"),
            simulator_cpu_percent=(child_ticks - child_ticks_before)
            / clock_ticks
            / (wall_now - wall_before)
            * 100,
        )
        cpu_before, wall_before = cpu_now, wall_now
        child_ticks_before, cycles_before = child_ticks, cycles_now
        scrapes.slowest_in_period = 0.0
        run.samples.append(entry)
        print(format_sample(entry, run.samples[0].rss_kib), file=out, flush=True)
        run.census_end = census
        if run.census_after_warmup is None and entry.t >= args.warmup - 1e-6:
            run.census_after_warmup = census
            if tracer is not None:
                tracer.take_warm()


# --------------------------------------------------------------------------- the simulator


async def simulator_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url + "/_simulator/stats") as response:
            stats: dict[str, Any] = await response.json()
            return stats
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


# --------------------------------------------------------------------------- the summary


@dataclass(frozen=True)
class Flatness:
    """How flat a count (open fds, tasks) stayed after the warm-up.

    Each sample has the lowest and the highest count its 1 s probes saw. A leak raises both;
    a pool of keep-alive connections that loses a few sockets to timeouts and dropped
    connections until the next cycle reopens them moves only the lows, and never lifts the
    highs above a full pool.
    """

    lowest: int
    highest: int
    first_high: int
    """The highest count of the first sample after the warm-up, with the pool already full."""
    low_rise: float
    high_rise: float
    """Least-squares trends of the lows and highs over the post-warm-up window."""
    tolerance: int

    @property
    def flat(self) -> bool:
        return (
            self.highest - self.first_high <= self.tolerance
            and self.low_rise <= self.tolerance / 2
            and self.high_rise <= self.tolerance / 2
        )

    def describe(self) -> str:
        return (
            f"min {self.lowest}, max {self.highest} after warm-up (first sample's max "
            f"{self.first_high}); trend of the lows {self.low_rise:+.1f}, of the highs "
            f"{self.high_rise:+.1f} over the window [target: max <= first max + "
            f"{self.tolerance}, trends <= {self.tolerance / 2:g}] "
            f"{'ok' if self.flat else 'NOT FLAT'}"
        )


def slope_per_minute(samples: Sequence[Sample], value: Callable[[Sample], float]) -> float:
    if len(samples) < 2:
        return 0.0
    minutes = [entry.t / 60 for entry in samples]
    return statistics.linear_regression(minutes, [value(entry) for entry in samples]).slope


def flatness(
    samples: Sequence[Sample], low: Callable[[Sample], int], high: Callable[[Sample], int], tol: int
) -> Flatness:
    window_minutes = (samples[-1].t - samples[0].t) / 60
    return Flatness(
        lowest=min(low(entry) for entry in samples),
        highest=max(high(entry) for entry in samples),
        first_high=high(samples[0]),
        low_rise=slope_per_minute(samples, lambda entry: low(entry)) * window_minutes,
        high_rise=slope_per_minute(samples, lambda entry: high(entry)) * window_minutes,
        tolerance=tol,
    )


def daemon_log_tally(path: Path) -> tuple[Counter[str], Counter[str]]:
    """(alert lines by "state alert", other lines by "level event") in the daemon's log."""
    alerts: Counter[str] = Counter()
    events: Counter[str] = Counter()
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                events["(not JSON)"] += 1
                continue
            if entry.get("event") == "alert":
                alerts[f"{entry.get('state')} {entry.get('alert')}"] += 1
            else:
                events[f"{entry.get('level')} {entry.get('event')}"] += 1
    return alerts, events


def _counts(counter: Counter[str], limit: int | None = None) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counter.most_common(limit)) or "none"


def summarize(
    args: argparse.Namespace,
    run: Run,
    monitor: Monitor,
    scrapes: Scrapes,
    injections: Injections,
    sim_stats: dict[str, Any] | None,
    daemon_log: Path,
    elapsed: float,
    interrupted: bool,
    out: TextIO,
) -> bool:
    """Print the summary; True for PASS."""

    def line(name: str, text: str) -> None:
        print(f"{name + ':':<19}{text}", file=out)

    print("\n== summary ==", file=out)
    figures = scrapes.latest
    after = [entry for entry in run.samples if entry.t >= args.warmup - 1e-6]
    line(
        "run",
        f"{elapsed:.0f} s{' (interrupted)' if interrupted else ''}, warm-up {args.warmup:g} s, "
        f"{len(run.samples)} samples ({len(after)} from the end of the warm-up on)",
    )
    verdict = len(after) >= 3
    if not verdict:
        line("RSS", "too few samples after the warm-up for a verdict")
    else:
        base, end = after[0], after[-1]
        growth = (end.rss_kib - base.rss_kib) / base.rss_kib * 100
        rss_ok = growth < args.max_rss_growth
        verdict = rss_ok
        line(
            "RSS",
            f"{base.rss_kib:,} KiB at end of warm-up (t={base.t:.0f} s) -> {end.rss_kib:,} KiB "
            f"at end (t={end.t:.0f} s): {growth:+.2f} % [target < {args.max_rss_growth:g} %] "
            f"{'ok' if rss_ok else 'TOO MUCH'}",
        )
        line(
            "RSS slope",
            f"{slope_per_minute(after, lambda entry: entry.rss_kib):+.1f} KiB/min (least "
            f"squares over {len(after)} samples after warm-up); peak VmHWM "
            f"{proc_status_kib('self', 'VmHWM') or 0:,} KiB; first sample "
            f"{run.samples[0].rss_kib:,} KiB",
        )
        fds = flatness(after, lambda s: s.fds_low, lambda s: s.fds_high, args.fd_tolerance)
        tasks = flatness(after, lambda s: s.tasks_low, lambda s: s.tasks_high, args.task_tolerance)
        line("open fds", fds.describe())
        line("asyncio tasks", tasks.describe() + " (poll-cycle workers not counted)")
        most_workers = max(entry.workers_high for entry in after)
        workers_ok = most_workers <= args.concurrency
        line(
            "poll workers",
            f"at most {most_workers} at once after warm-up [target <= poll.concurrency "
            f"{args.concurrency}] {'ok' if workers_ok else 'TOO MANY'}",
        )
        if run.census_after_warmup is not None and run.census_end is not None:
            line(
                "task census",
                "end of warm-up: "
                + _counts(run.census_after_warmup)
                + " | end: "
                + _counts(run.census_end),
            )
        verdict = verdict and fds.flat and tasks.flat and workers_ok
        line(
            "gc objects",
            f"{base.gc_objects:,} -> {end.gc_objects:,} "
            f"({slope_per_minute(after, lambda entry: entry.gc_objects):+.0f}/min)",
        )
        if base.simulator_rss_kib and end.simulator_rss_kib:
            line(
                "simulator RSS",
                f"{base.simulator_rss_kib:,} -> {end.simulator_rss_kib:,} KiB "
                f"({slope_per_minute(after, lambda entry: entry.simulator_rss_kib or 0):+.1f} "
                "KiB/min; the child process, not judged)",
            )
        window = (end.t - base.t) / 60
        if window > 0:
            line(
                "cycles/min",
                f"{(end.cycles - base.cycles) / window:.1f} after warm-up "
                f"(target {60 / args.interval:g} at a {args.interval:g} s interval)",
            )
    cycles = monitor.cycles_completed
    line(
        "poll cycles",
        f"{cycles:,} completed ({cycles / elapsed * 60:.1f}/min), "
        f"{figures.cycles_skipped:,.0f} scheduled runs skipped while one was still running",
    )
    line(
        "Atlas requests",
        f"{figures.requests:,.0f} ({figures.requests / elapsed:,.0f}/s); by code: "
        + _counts(figures.requests_by_code),
    )
    log_alerts, log_events = daemon_log_tally(daemon_log)
    firing = sum(count for key, count in log_alerts.items() if key.startswith("firing"))
    line(
        "alerts emitted",
        f"{figures.alerts:,.0f} firing per atlas_monitor_alerts_total ("
        + _counts(figures.alerts_by_name)
        + f"); log: {firing:,} firing, {sum(log_alerts.values()) - firing:,} resolved; "
        f"{figures.alerts_firing} firing now, {figures.endpoints_up}/{args.endpoints} up",
    )
    line("daemon log", _counts(log_events, 8))
    line(
        "faults injected",
        f"{sum(injections.faults.values()):,} ({_counts(injections.faults)})",
    )
    line(
        "status flips",
        f"{sum(injections.flips.values()):,} ({_counts(injections.flips)}); "
        f"{injections.failed} control requests failed"
        + (f", last: {injections.last_failure}" if injections.last_failure else ""),
    )
    if scrapes.seconds:
        times = sorted(scrapes.seconds)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        line(
            "scrapes",
            f"{scrapes.ok:,} ok, {scrapes.failed} failed; p50 {statistics.median(times) * 1000:.1f}"
            f" ms, p99 {p99 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
            + (f"; last failure: {scrapes.last_failure}" if scrapes.last_failure else ""),
        )
    if sim_stats is not None:
        requests = sim_stats.get("requests", {})
        by_status = ", ".join(
            f"{method} {status} {count:,}"
            for method, statuses in requests.items()
            for status, count in sorted(statuses.items())
        )
        line(
            "simulator saw",
            f"{sim_stats.get('total', 0):,} requests, {sim_stats.get('challenges', 0)} "
            f"Digest challenges; {by_status} (status 0 = dropped)",
        )
    line("load average", " ".join(f"{value:.2f}" for value in os.getloadavg()) + " (at the end)")
    if not run.samples or len(after) < 3:
        line("result", "INCONCLUSIVE (run longer than the warm-up)")
        return False
    line(
        "result",
        ("PASS" if verdict else "FAIL")
        + f" (target: after warm-up RSS growth < {args.max_rss_growth:g} %, fds and tasks flat)",
    )
    return verdict


# --------------------------------------------------------------------------- main


async def soak(args: argparse.Namespace, out: TextIO) -> int:
    tracer = LeakTracer() if args.tracemalloc else None
    rng = random.Random(args.seed)  # noqa: S311 - reproducible load, not cryptography
    workdir = Path(tempfile.mkdtemp(prefix="atlas-soak-"))
    scenario_path = workdir / "scenario.json"
    daemon_log = workdir / "daemon.log"
    fleet = make_fleet(args.endpoints, args.projects)
    entries = [scenario_entry(endpoint, rng) for endpoint in fleet]
    write_scenario(scenario_path, entries, nonce_lifetime_seconds=NONCE_LIFETIME_SECONDS)
    run = Run()
    scrapes = Scrapes()
    injections = Injections()
    interrupted = False
    failure: str | None = None
    result = EXIT_ERROR
    with (
        stop_signal_received() as stopped,
        daemon_log.open("a", encoding="utf-8") as log_stream,
    ):
        try:
            async with contextlib.AsyncExitStack() as services:
                # Closed last: whatever the daemon logs while it stops still has a file.
                services.callback(configure_logging, "error", stream=sys.stderr)
                configure_logging("warning", "json", stream=log_stream, secrets=[PRIVATE_KEY])
                simulator = await asyncio.to_thread(
                    SimulatorChild.start,
                    scenario_path,
                    workdir / "simulator.log",
                    give_up=stopped.done,
                )
                services.push_async_callback(asyncio.to_thread, simulator.stop)
                simulator_url = simulator.url
                app = create_app(daemon_settings(args, fleet, simulator_url))
                daemon_url = await serve_on_stack(services, app, "127.0.0.1", 0)
                monitor = app[MONITOR]
                loop = asyncio.get_running_loop()
                run.t0 = loop.time()
                control = await services.enter_async_context(
                    aiohttp.ClientSession(timeout=CONTROL_TIMEOUT)
                )
                scraper = await services.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
                )
                print(
                    f"# simulator pid {simulator.pid} at {simulator_url}, daemon at {daemon_url}; "
                    f"scenario and logs in {workdir}",
                    file=out,
                    flush=True,
                )
                workers = {
                    asyncio.create_task(scrape(scraper, daemon_url, args.scrape_every, scrapes)),
                    asyncio.create_task(
                        inject(control, simulator_url, fleet, args, rng, injections)
                    ),
                    asyncio.create_task(
                        sample(monitor, simulator.pid, args, run, scrapes, tracer, out)
                    ),
                }
                # A thread: Popen.wait blocks; the child's stop (services) ends it.
                child_exit = asyncio.create_task(asyncio.to_thread(simulator.process.wait))
                deadline = asyncio.create_task(asyncio.sleep(args.duration))
                waited: set[asyncio.Future[Any]] = {*workers, child_exit, deadline, stopped}
                done, _ = await asyncio.wait(
                    waited,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                elapsed = loop.time() - run.t0
                interrupted = stopped in done
                if child_exit in done:
                    failure = (
                        f"the simulator exited early with status {simulator.process.returncode}"
                    )
                for worker in workers & done:
                    failure = f"{worker.get_coro()!r} failed: {worker.exception()!r}"
                for task in (*workers, deadline, child_exit):
                    task.cancel()
                await asyncio.gather(*workers, deadline, child_exit, return_exceptions=True)
                if tracer is not None:
                    tracer.report(out)
                sim_stats = await simulator_stats(control, simulator_url)
                passed = summarize(
                    args,
                    run,
                    monitor,
                    scrapes,
                    injections,
                    sim_stats,
                    daemon_log,
                    elapsed,
                    interrupted,
                    out,
                )
                result = EXIT_PASS if passed else EXIT_FAIL
                print("stopping the daemon and the simulator...", file=out, flush=True)
        except KeyboardInterrupt:
            interrupted = True
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return EXIT_ERROR
    if interrupted:
        return EXIT_INTERRUPTED
    print("stopped.", file=out, flush=True)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Soak the real daemon against the simulator (a child process) with injected "
            "faults and status changes; sample its RSS, fds and tasks; judge the growth."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--endpoints", type=int, default=500, help="endpoints to watch")
    parser.add_argument("--projects", type=int, default=5, help="Atlas projects they spread over")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, s")
    parser.add_argument("--concurrency", type=int, default=50, help="the daemon's poll.concurrency")
    parser.add_argument("--timeout", type=float, default=1.0, help="atlas.timeout_seconds")
    parser.add_argument("--max-retries", type=int, default=2, help="atlas.max_retries")
    parser.add_argument("--duration", type=float, default=600.0, help="run length, s")
    parser.add_argument("--warmup", type=float, default=60.0, help="not judged, s")
    parser.add_argument("--sample-every", type=float, default=5.0, help="sample period, s")
    parser.add_argument("--scrape-every", type=float, default=1.0, help="/metrics scrape period")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.05,
        help="chance per endpoint per sample period of getting a fault",
    )
    parser.add_argument(
        "--flip-rate",
        type=float,
        default=0.02,
        help="chance per endpoint per sample period of a status change",
    )
    all_kinds = [name for name, _, _ in fault_kinds(1.0, 0)]
    parser.add_argument(
        "--fault-kinds",
        default=",".join(all_kinds),
        help="comma-separated fault kinds to inject, of " + ", ".join(all_kinds),
    )
    parser.add_argument("--seed", type=int, help="random seed; without it a fresh one (printed)")
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="target, percent")
    parser.add_argument(
        "--fd-tolerance", type=int, default=6, help="allowed rise of open fds after warm-up"
    )
    parser.add_argument(
        "--task-tolerance", type=int, default=6, help="allowed rise of tasks after warm-up"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="compare tracemalloc snapshots (end of warm-up vs end) to name what grew",
    )
    args = parser.parse_args(argv)
    check_bounds(
        parser,
        args,
        at_least_one=("endpoints", "projects", "concurrency"),
        positive=("interval", "timeout", "duration", "sample_every", "scrape_every"),
    )
    args.fault_kinds = [kind.strip() for kind in args.fault_kinds.split(",") if kind.strip()]
    unknown = sorted(set(args.fault_kinds) - set(all_kinds))
    if unknown:
        parser.error(f"--fault-kinds: unknown {', '.join(unknown)}")
    if not args.fault_kinds:
        args.fault_rate = 0.0
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    return args


def print_header(args: argparse.Namespace, out: TextIO) -> None:
    per_second = args.endpoints * args.fault_rate / args.sample_every
    print(
        f"# atlas-endpoint-monitor soak: {args.endpoints} endpoints in {args.projects} projects, "
        f"poll every {args.interval:g} s (concurrency {args.concurrency}, timeout "
        f"{args.timeout:g} s, {args.max_retries} retries), {args.duration:g} s with "
        f"{args.warmup:g} s warm-up, a sample every {args.sample_every:g} s, a scrape every "
        f"{args.scrape_every:g} s\n"
        f"# faults: {args.fault_rate:g} per endpoint per sample period (~{per_second:.1f}/s), "
        f"status flips {args.flip_rate:g} likewise; kinds {','.join(args.fault_kinds) or 'none'}; "
        f"seed {args.seed}"
        f"{'; tracemalloc on' if args.tracemalloc else ''}\n"
        f"# machine: {machine_description()}\n"
        f"# code: {code_revision()}\n"
        "# columns: this process's RSS (median of the period's 1 s probes) and its growth since "
        "the first sample; lowest-highest open fds and asyncio tasks (poll-cycle workers apart: "
        "wkrs = most at once) seen by the probes; gc objects; CPU of this process; cycles "
        "completed, scheduled runs skipped, mean cycle duration; Atlas requests and firing "
        "alert lines so far (from /metrics); the period's slowest scrape; the simulator's RSS "
        "[KiB] and CPU",
        file=out,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args, sys.stdout)
    try:
        return asyncio.run(soak(args, sys.stdout))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
