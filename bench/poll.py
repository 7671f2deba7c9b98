#!/usr/bin/env python3
"""Poll benchmark: how fast, how cheaply and how politely does the daemon poll N endpoints?

Why
---
The daemon's design rests on claims that no unit test checks: that a cycle over N endpoints
takes about N x latency / concurrency (the work is waiting, and asyncio waits well), that each
endpoint costs one request per cycle once the Digest challenge is known, that polling costs a
fraction of the CPU of the obvious alternative (``requests`` + ``HTTPDigestAuth`` in a thread
pool, ``bench/baseline_requests.py``), that memory stays modest at 10,000 endpoints, and that
``/metrics`` answers quickly while a cycle is in flight. This script measures each one at
several fleet sizes, next to the baseline, and judges the largest size against targets:

- steady cycle <= 1.2 x ideal (ideal = N x latency / concurrency);
- <= 1.01 requests per endpoint per steady cycle;
- CPU per 1,000 polls at least 3x lower than the baseline's;
- RSS <= 150 MiB after three cycles;
- ``/metrics`` p99 <= 50 ms while a cycle runs;
- ``/metrics`` <= 50 ms right after a whole cycle nobody scraped (what every scrape meets
  when Prometheus scrapes no more often than the daemon polls).

``--spread-demo`` (on by default) then shows ``poll.max_requests_per_minute`` at work: one
project of 300 endpoints polled once without pacing (a burst) and once at 600 per minute (a
flat ~10 requests per second), as requests per second of the cycle.

``--pacing-case`` (on by default) then checks that pacing holds no cycle hostage to one
project (issue 16): one cycle at ``--pacing-rpm`` requests per minute per project,
concurrency ``--pacing-concurrency``, ``--pacing-latency`` s per GET, for the same 3 x 200
endpoints listed grouped by project and interleaved, and for one project of 200 listed
after (and before) 100 projects of 10. Each cycle is judged against the paced bound, the
largest project's endpoint count x 60 / limit: within 1.1 x that, plus latency, whatever
the order; and grouped within 10 % of interleaved. ``--only-pacing-case`` runs just that
(``make bench BENCH_ARGS=--only-pacing-case``).

How
---
For each N in ``--sizes``, in fresh processes, so that every figure belongs to one N and one
program:

1. a scenario of N AVAILABLE endpoints over ``--projects`` projects (so per-project limits
   never bind), each with a ``{latency_seconds: LATENCY, methods: [GET]}`` fault, no rate
   limit, is served by ``python -m monitor simulate`` in a child process (its CPU and memory
   are not the daemon's; its CPU time is read from ``/proc/PID/stat`` to tell when it, not the
   daemon, is the bottleneck);
2. the daemon runs in a child process (``--worker daemon``): ``create_app`` on the settings of
   ``atlas-endpoint-monitor run`` (``poll.interval_seconds`` 0.05, so the real APScheduler job
   runs cycles back to back; ``poll.concurrency`` = ``--concurrency``;
   ``atlas.timeout_seconds`` 30; ``atlas.max_retries`` 0; ``poll.max_requests_per_minute``
   null; log level error), served on a free port. Cycle 1 is timed from app start (it pays
   the one Digest challenge); cycle 2 is the steady cycle, timed by the daemon's own
   ``atlas_monitor_poll_cycle_duration_seconds`` and charged the process's CPU time
   (``time.process_time``) between the ends of cycles 1 and 2; during cycle 3 a scraper hits
   ``/metrics`` back to back as Prometheus does (OpenMetrics ``Accept``, gzip), and the
   daemon's ``atlas_monitor_api_requests_total`` is sampled every 100 ms for the request rate.
   RSS (``VmRSS``) is read when cycle 3 ends. Nobody scrapes during cycle 4; when it ends, a
   second scraper scrapes as Prometheus would: once at once (every endpoint changed since
   the last scrape), every ``--spaced-every`` seconds during cycle 5, and once when cycle 5
   ends. Requests per endpoint come from the simulator's
   ``/_simulator/stats`` (every request, 401 challenges included), read as soon as a cycle
   ends: the simulator counts a GET only when it answers, after the 50 ms fault latency, so a
   read within that time sees none of the next cycle's requests; the daemon's own counter,
   read at the same moment, is kept beside it as a check;
3. the baseline runs in a child process (``bench/baseline_requests.py``), three cycles back to
   back with the same concurrency against the same simulator;
4. the simulator is stopped (always), and the next N begins.

The scraper is a child process of the daemon worker rather than a task in the daemon's event
loop: a real Prometheus is another process, and a client in the same loop would charge its
own work (reading and decompressing megabytes) to the daemon's latency and CPU. It is told to
start when cycle 3's poll workers appear and to stop when cycle 3 ends. Its first scrape,
like the spaced scraper's first, finds every endpoint polled since the scrape before (none
before it), which is what every scrape meets when Prometheus scrapes no more often than the
daemon polls; the later, back-to-back ones find only the endpoints polled since the one
before.

Run it with ``make bench`` (which installs the ``bench`` extra) or directly::

    .venv/bin/python bench/poll.py                          # 100, 1,000 and 10,000 endpoints
    .venv/bin/python bench/poll.py --sizes 1000 --no-spread-demo

Exit status: 0 when every target is met, 1 when one is missed, 2 when the run failed.
Scenarios and the children's logs stay in the temporary directory named in the header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import gzip
import http.client
import importlib.metadata
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from harness import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    SCRAPE_ACCEPT,
    SimulatorChild,
    available_after,
    check_bounds,
    code_revision,
    cpu_seconds_of,
    die_with_parent,
    fleet,
    machine_description,
    proc_status_kib,
    write_scenario,
)
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr

from monitor.atlas import ApiKey
from monitor.config import BASE_URL_ENV, ConfigError, Credentials, Settings, parse_config
from monitor.exposition import MonitorMetrics
from monitor.lifecycle import serve_on_stack
from monitor.logs import configure_logging
from monitor.polling.poller import Monitor
from monitor.polling.statestore import StateStore
from monitor.server import MONITOR, create_app

BENCH_DIR = Path(__file__).resolve().parent
BASELINE = BENCH_DIR / "baseline_requests.py"

EXIT_PASS = 0
EXIT_MISS = 1
EXIT_ERROR = 2

WORKER_TIMEOUT = 1800.0
SAMPLE_EVERY = 0.1
"""Request-counter sampling period, s."""
POLL_WORKER = "for_each_by_project.<locals>.lane_worker"
"""The coroutine of ``polling.poller.for_each_by_project``'s workers: they exist while a cycle
runs, so their appearance marks a cycle's start."""

# Targets, judged at the largest N.
MAX_STEADY_RATIO = 1.2
MAX_REQUESTS_PER_ENDPOINT = 1.01
MIN_CPU_ADVANTAGE = 3.0
MAX_RSS_MIB = 150.0
MAX_SCRAPE_P99_MS = 50.0
MAX_SCRAPE_AFTER_CYCLE_MS = 50.0


# --------------------------------------------------------------------------- the fleet


def write_fleet_scenario(path: Path, endpoints: Iterable[dict[str, str]], latency: float) -> None:
    """Every endpoint AVAILABLE and answering each GET ``latency`` s late; no rate limit."""
    write_scenario(path, available_after(latency, endpoints), rate_limit_per_minute=None)


@dataclass(frozen=True)
class PacingLayout:
    """One config order for the pacing case: projects of ``sizes`` endpoints, listed one
    project after the other or dealt round-robin."""

    title: str
    sizes: tuple[int, ...]
    interleaved: bool = False

    def endpoints(self) -> list[dict[str, str]]:
        projects = [
            [
                {
                    "group_id": f"{0xA000 + project:024x}",
                    "private_link_id": f"{0x5E00A000 + project:024x}",
                    "interface_endpoint_id": f"vpce-{0xA000000 + project * 1000 + index:017x}",
                }
                for index in range(size)
            ]
            for project, size in enumerate(self.sizes)
        ]
        if not self.interleaved:
            return list(itertools.chain.from_iterable(projects))
        rounds = itertools.zip_longest(*projects)
        return [entry for entry in itertools.chain.from_iterable(rounds) if entry is not None]

    def paced_bound(self, per_minute: int) -> float:
        """What pacing alone makes the largest project take, s."""
        return max(self.sizes) * 60 / per_minute


PACING_LAYOUTS = {
    "grouped": PacingLayout("3 x 200, grouped by project", (200, 200, 200)),
    "interleaved": PacingLayout("3 x 200, interleaved", (200, 200, 200), interleaved=True),
    "large-last": PacingLayout("1 x 200 after 100 x 10", (*[10] * 100, 200)),
    "large-first": PacingLayout("1 x 200 before 100 x 10", (200, *[10] * 100)),
}
MAX_PACED_RATIO = 1.1
"""Issue 16: a paced cycle <= 1.1 x the largest project's paced time, plus latency."""


def write_pacing_scenario(path: Path, latency: float) -> None:
    """Every endpoint of every pacing layout, AVAILABLE, each GET ``latency`` s late."""
    endpoints = {
        entry["interface_endpoint_id"]: entry
        for layout in PACING_LAYOUTS.values()
        for entry in layout.endpoints()
    }
    write_fleet_scenario(path, endpoints.values(), latency)


def daemon_settings(
    url: str,
    count: int,
    projects: int,
    *,
    interval: float,
    concurrency: int,
    max_requests_per_minute: int | None,
    endpoints: list[dict[str, str]] | None = None,
) -> tuple[Settings, bool]:
    """The daemon's settings, and whether ``poll.max_requests_per_minute`` was accepted (a
    config without the key runs unpaced anyway). ``endpoints`` replaces the round-robin
    fleet of ``count`` over ``projects``."""
    poll: dict[str, Any] = {
        "interval_seconds": interval,
        "concurrency": concurrency,
        "max_requests_per_minute": max_requests_per_minute,
    }
    document: dict[str, Any] = {
        "atlas": {"timeout_seconds": 30, "max_retries": 0},
        "poll": poll,
        "server": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "error", "format": "json"},
        "endpoints": fleet(count, projects) if endpoints is None else endpoints,
    }
    try:
        config, accepted = parse_config(document, {BASE_URL_ENV: url}), True
    except ConfigError as error:
        if not any(p.startswith("poll.max_requests_per_minute") for p in error.problems):
            raise
        del poll["max_requests_per_minute"]
        config, accepted = parse_config(document, {BASE_URL_ENV: url}), False
    credentials = Credentials(ApiKey(PUBLIC_KEY, SecretStr(PRIVATE_KEY)), "the poll benchmark")
    return Settings(config=config, credentials=credentials, source=Path(__file__)), accepted


# --------------------------------------------------------------------------- /proc


# --------------------------------------------------------------------------- daemon worker


def metric_value(metric: MetricWrapperBase, sample_name: str) -> float:
    """Sum of a metric's samples of that name, from the metric alone: the registry's
    ``get_sample_value`` would also collect every endpoint's series (10,000 x 20 at the
    largest N) each time, which is the daemon's work to measure, not the bench's."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name == sample_name
    )


def api_requests(metrics: MonitorMetrics) -> float:
    return metric_value(metrics.api_requests, "atlas_monitor_api_requests_total")


def cycle_seconds_sum(metrics: MonitorMetrics) -> float:
    return metric_value(
        metrics.poll_cycle_duration, "atlas_monitor_poll_cycle_duration_seconds_sum"
    )


@dataclass(frozen=True)
class Mark:
    """Readings taken the moment a cycle ends, before anything else runs."""

    wall: float
    cpu: float
    cycle_sum: float
    daemon_requests: float
    simulator_cpu: float | None
    simulator_requests: int = 0


async def simulator_total(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/_simulator/stats") as response:
        response.raise_for_status()
        stats: dict[str, Any] = await response.json()
    return int(stats["total"])


async def mark(
    monitor: Monitor, session: aiohttp.ClientSession, url: str, simulator_pid: int | None
) -> Mark:
    taken = Mark(
        wall=time.perf_counter(),
        cpu=time.process_time(),
        cycle_sum=cycle_seconds_sum(monitor.metrics),
        daemon_requests=api_requests(monitor.metrics),
        simulator_cpu=cpu_seconds_of(simulator_pid),
    )
    return dataclasses.replace(taken, simulator_requests=await simulator_total(session, url))


async def wait_for_cycle_start(limit: float = 2.0) -> None:
    """Until the poll workers of the next cycle exist (the scheduler starts one within an
    interval of the last one's end), or ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(_coroutine_name(task) == POLL_WORKER for task in asyncio.all_tasks()):
            return
        await asyncio.sleep(0.001)


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", ""))


async def sample_requests(metrics: MonitorMetrics, into: list[float]) -> None:
    """Append the daemon's request counter every SAMPLE_EVERY s, on a drift-free schedule."""
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    while True:
        into.append(api_requests(metrics))
        next_tick += SAMPLE_EVERY
        await asyncio.sleep(max(0.0, next_tick - loop.time()))


def cycle_figures(
    before: Mark, after: Mark, wall: float, count: int
) -> dict[str, float | int | None]:
    simulator_cpu = (
        None
        if before.simulator_cpu is None or after.simulator_cpu is None
        else after.simulator_cpu - before.simulator_cpu
    )
    return {
        "wall_seconds": wall,
        "cpu_seconds": after.cpu - before.cpu,
        "requests": after.simulator_requests - before.simulator_requests,
        "daemon_requests": after.daemon_requests - before.daemon_requests,
        "simulator_cpu_seconds": simulator_cpu,
        "between_marks_seconds": after.wall - before.wall,
        "endpoints": count,
    }


class Scraper:
    """The ``--worker scraper`` child: started before the daemon, told when to go and stop;
    back to back, or every ``every`` seconds and once more after the stop."""

    def __init__(self, every: float | None = None) -> None:
        spacing = [] if every is None else ["--every", str(every)]
        # A fixed command: this interpreter and this file.
        self._process = subprocess.Popen(  # noqa: S603
            [sys.executable, __file__, "--worker", "scraper", *spacing],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the scraper did not start")

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def go(self, url: str) -> None:
        self._send(url)

    def stop(self) -> dict[str, Any]:
        self._send("stop")
        output, _ = self._process.communicate(timeout=120)
        result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


async def daemon_worker(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("error", "json", stream=sys.stderr, secrets=[PRIVATE_KEY])
    settings, pacing_key = daemon_settings(
        args.url,
        args.n,
        args.projects,
        interval=args.interval,
        concurrency=args.concurrency,
        max_requests_per_minute=None,
    )
    ideal = args.n * args.latency / args.concurrency
    cycle_timeout = 120.0 + 20 * ideal
    scraper = Scraper()
    spaced = Scraper(every=args.spaced_every)
    store = StateStore.open(Path(args.state_path), 0) if args.state_path else None
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as control,
            contextlib.AsyncExitStack() as services,
        ):
            simulator_before = await simulator_total(control, args.url)
            start = Mark(
                wall=time.perf_counter(),
                cpu=time.process_time(),
                cycle_sum=0.0,
                daemon_requests=0.0,
                simulator_cpu=cpu_seconds_of(args.simulator_pid),
                simulator_requests=simulator_before,
            )
            app = create_app(settings, store=store)
            daemon_url = await serve_on_stack(services, app, "127.0.0.1", 0)
            monitor = app[MONITOR]

            async def cycle_end(number: int) -> Mark:
                await asyncio.wait_for(monitor.wait_for_cycles(number), cycle_timeout)
                return await mark(monitor, control, args.url, args.simulator_pid)

            first = await cycle_end(1)
            second = await cycle_end(2)
            rss_unscraped = proc_status_kib("self", "VmRSS")
            await wait_for_cycle_start()
            scraper.go(daemon_url)
            counts: list[float] = []
            sampler = asyncio.create_task(sample_requests(monitor.metrics, counts))
            third = await cycle_end(3)
            sampler.cancel()
            rss = proc_status_kib("self", "VmRSS")
            hwm = proc_status_kib("self", "VmHWM")
            scrapes = await asyncio.to_thread(scraper.stop)
            await asyncio.wait_for(monitor.wait_for_cycles(4), cycle_timeout)
            spaced.go(daemon_url)
            await asyncio.wait_for(monitor.wait_for_cycles(5), cycle_timeout)
            spaced_scrapes = await asyncio.to_thread(spaced.stop)
    finally:
        scraper.kill()
        spaced.kill()
        if store is not None:
            store.close()
    return {
        "implementation": "daemon",
        "n": args.n,
        "concurrency": args.concurrency,
        "pacing_key_accepted": pacing_key,
        "cycles": [
            cycle_figures(start, first, first.wall - start.wall, args.n),
            cycle_figures(first, second, second.cycle_sum - first.cycle_sum, args.n),
            cycle_figures(second, third, third.cycle_sum - second.cycle_sum, args.n),
        ],
        "rss_kib": rss,
        "rss_before_scrapes_kib": rss_unscraped,
        "hwm_kib": hwm,
        "scrapes": scrapes,
        "spaced_scrapes": spaced_scrapes,
        "rate_per_second": [(b - a) / SAMPLE_EVERY for a, b in itertools.pairwise(counts)],
    }


# --------------------------------------------------------------------------- scraper worker


def scraper_worker(out: TextIO, every: float | None) -> dict[str, Any]:
    """Scrape from the ``go`` (a URL on stdin) to the ``stop`` line, at least once: back to
    back, or every ``every`` seconds and then once more at the stop.

    The clock runs from sending the request to the last byte of the body, over one keep-alive
    connection as Prometheus keeps one. Only the last body is decompressed, after the stop,
    for the uncompressed size.
    """
    print("ready", file=out, flush=True)
    url = urllib.parse.urlsplit(sys.stdin.readline().strip())
    stopped = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        stopped.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    headers = {"Accept": SCRAPE_ACCEPT, "Accept-Encoding": "gzip"}
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    seconds: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []
    body = b""
    encoding = None

    def scrape() -> float:
        nonlocal body, encoding
        started = time.perf_counter()
        try:
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
            else:
                seconds.append(elapsed)
                sizes.append(len(body))
                encoding = response.getheader("Content-Encoding")
        except (OSError, http.client.HTTPException) as error:
            errors.append(f"{type(error).__name__}: {error}")
            connection.close()
        return started

    while True:
        started = scrape()
        if stopped.is_set():
            break
        if every is not None and stopped.wait(max(0.0, started + every - time.perf_counter())):
            break
    if every is not None:
        scrape()
    connection.close()
    raw = len(gzip.decompress(body)) if encoding == "gzip" and body else len(body)
    return {
        "count": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000 if seconds else None,
        "p99_ms": percentile(seconds, 99) * 1000 if seconds else None,
        "max_ms": max(seconds) * 1000 if seconds else None,
        "first_ms": seconds[0] * 1000 if seconds else None,
        "last_ms": seconds[-1] * 1000 if seconds else None,
        "gzip_bytes": sizes[-1] if sizes and encoding == "gzip" else None,
        "raw_bytes": raw,
        "content_encoding": encoding,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def percentile(values: Sequence[float], rank: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------- spread worker


async def spread_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One cycle over one project, with ``--max-requests-per-minute`` (0 = null), sampling the
    request counter every SAMPLE_EVERY s from app start to the cycle's end."""
    configure_logging("error", "json", stream=sys.stderr, secrets=[PRIVATE_KEY])
    settings, pacing_key = daemon_settings(
        args.url,
        args.n,
        1,
        interval=args.interval,
        concurrency=args.concurrency,
        max_requests_per_minute=args.max_requests_per_minute or None,
    )
    counts: list[float] = []
    async with contextlib.AsyncExitStack() as services:
        app = create_app(settings)
        monitor = app[MONITOR]
        sampler = asyncio.create_task(sample_requests(monitor.metrics, counts))
        await serve_on_stack(services, app, "127.0.0.1", 0)
        await asyncio.wait_for(monitor.wait_for_cycles(1), 600)
        counts.append(api_requests(monitor.metrics))
        sampler.cancel()
        duration = cycle_seconds_sum(monitor.metrics)
    return {
        "max_requests_per_minute": args.max_requests_per_minute or None,
        "pacing_key_accepted": pacing_key,
        "cycle_seconds": duration,
        "counts": counts,
    }


async def pacing_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One paced cycle over the endpoints of ``--layout``, timed by the daemon itself."""
    configure_logging("error", "json", stream=sys.stderr, secrets=[PRIVATE_KEY])
    layout = PACING_LAYOUTS[args.layout]
    settings, pacing_key = daemon_settings(
        args.url,
        0,
        1,
        interval=600.0,
        concurrency=args.pacing_concurrency,
        max_requests_per_minute=args.pacing_rpm,
        endpoints=layout.endpoints(),
    )
    async with contextlib.AsyncExitStack() as services:
        app = create_app(settings)
        monitor = app[MONITOR]
        await serve_on_stack(services, app, "127.0.0.1", 0)
        await asyncio.wait_for(monitor.wait_for_cycles(1), 600)
        return {
            "pacing_key_accepted": pacing_key,
            "cycle_seconds": cycle_seconds_sum(monitor.metrics),
            "requests": api_requests(monitor.metrics),
            "up": sum(bool(state and state.up) for _, state in monitor.snapshot()),
            "endpoints": len(monitor.endpoints),
        }


# --------------------------------------------------------------------------- children


def run_child(command: Sequence[str], log_path: Path) -> dict[str, Any]:
    """Run a worker, its stderr to ``log_path``; its last stdout line is its JSON result."""
    with log_path.open("wb") as log_file:
        # Fixed commands: this interpreter with this directory's scripts.
        done = subprocess.run(  # noqa: S603
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            timeout=WORKER_TIMEOUT,
            check=False,
            preexec_fn=die_with_parent,
        )
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{command[1]} exited with {done.returncode}; its stderr:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --------------------------------------------------------------------------- orchestration


@dataclass
class Row:
    """One implementation at one N, as the table shows it."""

    n: int
    implementation: str
    first_seconds: float
    steady_seconds: float
    ideal_seconds: float
    first_requests: float
    steady_requests: float
    cpu_per_thousand: float
    own_cpu_percent: float
    simulator_cpu_percent: float | None
    rss_mib: float
    rss_before_scrapes_mib: float | None
    peak_rss_mib: float | None
    scrapes: dict[str, Any] | None
    spaced: dict[str, Any] | None
    third_seconds: float | None
    rates: list[float]
    errors: int
    check_mismatch: str | None

    @property
    def ratio(self) -> float:
        return self.steady_seconds / self.ideal_seconds


def row_from(result: dict[str, Any], latency: float) -> Row:
    n = int(result["n"])
    first, steady, *rest = result["cycles"]
    ideal = n * latency / int(result["concurrency"])
    simulator_cpu = steady.get("simulator_cpu_seconds")
    mismatch = None
    if result["implementation"] == "daemon":
        mismatches = [
            f"cycle {number}: simulator {cycle['requests']}, daemon {cycle['daemon_requests']:.0f}"
            for number, cycle in enumerate(result["cycles"], start=1)
            if cycle["requests"] != cycle["daemon_requests"]
        ]
        mismatch = "; ".join(mismatches) or None
    # Shares of one core during the cycle (the daemon is idle in the gap between cycles).
    span = steady["wall_seconds"]
    return Row(
        n=n,
        implementation=str(result["implementation"]),
        first_seconds=first["wall_seconds"],
        steady_seconds=steady["wall_seconds"],
        ideal_seconds=ideal,
        first_requests=first["requests"] / n,
        steady_requests=steady["requests"] / n,
        cpu_per_thousand=steady["cpu_seconds"] / n * 1000,
        own_cpu_percent=steady["cpu_seconds"] / span * 100,
        simulator_cpu_percent=None if simulator_cpu is None else simulator_cpu / span * 100,
        rss_mib=(result.get("rss_kib") or 0) / 1024,
        rss_before_scrapes_mib=_mib(result.get("rss_before_scrapes_kib")),
        peak_rss_mib=_mib(result.get("hwm_kib")),
        scrapes=result.get("scrapes"),
        spaced=result.get("spaced_scrapes"),
        third_seconds=rest[0]["wall_seconds"] if rest and "scrapes" in result else None,
        rates=list(result.get("rate_per_second", [])),
        errors=sum(int(cycle.get("errors", 0)) for cycle in result["cycles"]),
        check_mismatch=mismatch,
    )


def _mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def requests_version() -> str:
    try:
        return importlib.metadata.version("requests")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def print_header(args: argparse.Namespace, workdir: Path, out: TextIO) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"# atlas-endpoint-monitor poll benchmark, {now}\n"
        f"# machine: {machine_description()}\n"
        f"# code: {code_revision()}\n"
        f"# parameters: sizes {','.join(str(n) for n in args.sizes)}; simulator latency "
        f"{args.latency:g} s per GET; concurrency {args.concurrency}; {args.projects} projects\n"
        f"# daemon: poll.interval_seconds {args.interval:g} (cycles back to back), "
        f"atlas.timeout_seconds 30, atlas.max_retries 0, poll.max_requests_per_minute null, "
        f"log level error, state.path {'a fresh file per N' if args.state_file else 'none'}\n"
        f"# baseline: requests {requests_version()} + HTTPDigestAuth, "
        f"ThreadPoolExecutor(max_workers={args.concurrency}), one Session per thread\n"
        f"# scenarios and logs: {workdir}",
        file=out,
        flush=True,
    )


def measure_size(
    args: argparse.Namespace, n: int, workdir: Path, out: TextIO
) -> tuple[Row, Row, bool]:
    scenario = workdir / f"scenario-{n}.json"
    write_fleet_scenario(scenario, fleet(n, args.projects), args.latency)
    started = time.monotonic()
    simulator = SimulatorChild.start(scenario, workdir / f"simulator-{n}.log")
    try:
        print(
            f"# N={n}: simulator pid {simulator.pid} up after {time.monotonic() - started:.1f} s",
            file=out,
            flush=True,
        )
        common = [
            "--n",
            str(n),
            "--url",
            simulator.url,
            "--concurrency",
            str(args.concurrency),
            "--projects",
            str(args.projects),
            "--simulator-pid",
            str(simulator.pid),
        ]
        started = time.monotonic()
        daemon = run_child(
            [
                sys.executable,
                __file__,
                "--worker",
                "daemon",
                "--latency",
                str(args.latency),
                "--interval",
                str(args.interval),
                "--spaced-every",
                str(args.spaced_every),
                *(["--state-path", str(workdir / f"state-{n}.db")] if args.state_file else []),
                *common,
            ],
            workdir / f"daemon-{n}.log",
        )
        print(f"# N={n}: daemon done in {time.monotonic() - started:.1f} s", file=out, flush=True)
        started = time.monotonic()
        baseline = run_child(
            [
                sys.executable,
                str(BASELINE),
                "--cycles",
                "3",
                "--public-key",
                PUBLIC_KEY,
                "--private-key",
                PRIVATE_KEY,
                *common,
            ],
            workdir / f"baseline-{n}.log",
        )
        print(f"# N={n}: baseline done in {time.monotonic() - started:.1f} s", file=out, flush=True)
    finally:
        simulator.stop()
    return (
        row_from(daemon, args.latency),
        row_from(baseline, args.latency),
        bool(daemon["pacing_key_accepted"]),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


COLUMNS: list[tuple[str, str]] = [
    ("N", ">"),
    ("impl", "<"),
    ("first s", ">"),
    ("steady s", ">"),
    ("ideal s", ">"),
    ("ratio", ">"),
    ("req/ep first", ">"),
    ("req/ep steady", ">"),
    ("CPU s/1k polls", ">"),
    ("CPU% own/sim", ">"),
    ("RSS MiB", ">"),
    ("/metrics p50 ms", ">"),
    ("p99 ms", ">"),
    ("payload raw/gzip KiB", ">"),
    ("scrapes", ">"),
    ("cycle 3 s", ">"),
    ("after cycle ms", ">"),
    ("1 s apart max ms", ">"),
]


def table_cells(row: Row) -> list[str]:
    simulator = "-" if row.simulator_cpu_percent is None else f"{row.simulator_cpu_percent:.0f}"
    scrapes = row.scrapes
    if scrapes is None:
        metrics_cells = ["n/a"] * 7
    else:
        spaced = row.spaced or {}
        gzip_kib = "-" if scrapes["gzip_bytes"] is None else f"{scrapes['gzip_bytes'] / 1024:,.0f}"
        metrics_cells = [
            _ms(scrapes["p50_ms"]),
            _ms(scrapes["p99_ms"]),
            f"{scrapes['raw_bytes'] / 1024:,.0f}/{gzip_kib}",
            str(scrapes["count"]),
            "-" if row.third_seconds is None else f"{row.third_seconds:.3f}",
            _ms(spaced.get("first_ms")),
            _ms(spaced.get("max_ms")),
        ]
    return [
        f"{row.n:,}",
        row.implementation,
        f"{row.first_seconds:.3f}",
        f"{row.steady_seconds:.3f}",
        f"{row.ideal_seconds:.3f}",
        f"{row.ratio:.2f}",
        f"{row.first_requests:.4f}",
        f"{row.steady_requests:.4f}",
        f"{row.cpu_per_thousand:.3f}",
        f"{row.own_cpu_percent:.0f}/{simulator}",
        f"{row.rss_mib:.1f}",
        *metrics_cells,
    ]


def print_table(rows: Sequence[Row], out: TextIO) -> None:
    cells = [table_cells(row) for row in rows]
    widths = [
        max(len(title), *(len(line[index]) for line in cells))
        for index, (title, _) in enumerate(COLUMNS)
    ]

    def line(values: Iterable[str]) -> str:
        return "  ".join(
            f"{value:{align}{width}}"
            for value, (_, align), width in zip(values, COLUMNS, widths, strict=True)
        ).rstrip()

    print(line(title for title, _ in COLUMNS), file=out)
    print(line("-" * width for width in widths), file=out)
    for row_cells in cells:
        print(line(row_cells), file=out)
    print(
        "first = app start to the end of cycle 1 (with the Digest challenge; the baseline pays "
        "one per thread); steady = cycle 2 (daemon: its own atlas_monitor_poll_cycle_duration_"
        "seconds); ideal = N x latency / concurrency; req/ep = simulator requests (401s "
        "included) per endpoint; CPU s/1k polls and CPU% own/sim (percent of one core, own "
        "process / simulator) over cycle 2; RSS after 3 cycles; /metrics = back-to-back "
        "OpenMetrics+gzip scrapes during cycle 3 (latency to the last body byte; payload of "
        "the last scrape); cycle 3 s = that cycle's duration under the scraping; after cycle = "
        "one scrape when cycle 4, unscraped, ends; 1 s apart = the slowest of that one, scrapes "
        "every second during cycle 5 and one when it ends.",
        file=out,
    )


def print_notes(rows: Sequence[Row], out: TextIO) -> None:
    for row in rows:
        if row.implementation == "daemon" and row.rates:
            print(
                f"N={row.n:,} daemon cycle 3 request rate (daemon counter, 100 ms samples): "
                f"mean {statistics.fmean(row.rates):,.0f}/s, min {min(row.rates):,.0f}/s, "
                f"max {max(row.rates):,.0f}/s over {len(row.rates)} samples",
                file=out,
            )
        if row.implementation == "daemon" and row.rss_before_scrapes_mib is not None:
            print(
                f"N={row.n:,} daemon RSS: {row.rss_before_scrapes_mib:.1f} MiB after cycle 2 "
                f"(before any scrape), {row.rss_mib:.1f} MiB after cycle 3 (scraped), peak "
                f"{row.peak_rss_mib or 0:.1f} MiB (VmHWM)",
                file=out,
            )
        if row.errors:
            print(f"N={row.n:,} {row.implementation}: {row.errors} failed polls", file=out)
        if row.check_mismatch:
            print(
                f"N={row.n:,} daemon: simulator and daemon request counts differ "
                f"({row.check_mismatch})",
                file=out,
            )
        if row.scrapes and row.scrapes.get("count", 0) > 1:
            print(
                f"N={row.n:,} daemon /metrics during cycle 3: first scrape "
                f"{_ms(row.scrapes['first_ms'])} ms (every endpoint was polled since the "
                f"scrape before, as at every scrape when the scrape interval is not shorter "
                f"than the poll interval), max {_ms(row.scrapes['max_ms'])} ms",
                file=out,
            )
        if row.spaced:
            print(
                f"N={row.n:,} daemon /metrics scraped like Prometheus: "
                f"{_ms(row.spaced['first_ms'])} ms right after unscraped cycle 4, then "
                f"{row.spaced['count'] - 1} scrapes 1 s apart during cycle 5 and at its end: "
                f"p50 {_ms(row.spaced['p50_ms'])} ms, max {_ms(row.spaced['max_ms'])} ms, "
                f"{_ms(row.spaced['last_ms'])} ms at the end",
                file=out,
            )
        scrape_errors = (row.scrapes or {}).get("error_count", 0) + (row.spaced or {}).get(
            "error_count", 0
        )
        if scrape_errors:
            print(
                f"N={row.n:,} daemon: {scrape_errors} failed scrapes, e.g. "
                f"{row.scrapes['errors'] if row.scrapes else ''}",
                file=out,
            )


def judge(daemon: Row, baseline: Row, out: TextIO) -> bool:
    scrapes = daemon.scrapes or {}
    p99 = scrapes.get("p99_ms")
    after_cycle = (daemon.spaced or {}).get("first_ms")
    advantage = (
        baseline.cpu_per_thousand / daemon.cpu_per_thousand if daemon.cpu_per_thousand else 0.0
    )
    verdicts = [
        (
            f"steady cycle <= {MAX_STEADY_RATIO:g} x ideal",
            f"{daemon.steady_seconds:.3f} s vs ideal {daemon.ideal_seconds:.3f} s "
            f"({daemon.ratio:.2f}x)",
            daemon.ratio <= MAX_STEADY_RATIO,
        ),
        (
            f"requests/endpoint/cycle (steady) <= {MAX_REQUESTS_PER_ENDPOINT:g}",
            f"{daemon.steady_requests:.4f}",
            daemon.steady_requests <= MAX_REQUESTS_PER_ENDPOINT,
        ),
        (
            f"CPU per 1,000 polls >= {MIN_CPU_ADVANTAGE:g}x lower than baseline",
            f"{daemon.cpu_per_thousand:.3f} s vs {baseline.cpu_per_thousand:.3f} s "
            f"({advantage:.1f}x lower)",
            advantage >= MIN_CPU_ADVANTAGE,
        ),
        (
            f"RSS <= {MAX_RSS_MIB:g} MiB",
            f"{daemon.rss_mib:.1f} MiB",
            daemon.rss_mib <= MAX_RSS_MIB,
        ),
        (
            f"/metrics p99 <= {MAX_SCRAPE_P99_MS:g} ms during a cycle",
            f"{_ms(p99)} ms over {scrapes.get('count', 0)} scrapes",
            p99 is not None and p99 <= MAX_SCRAPE_P99_MS,
        ),
        (
            f"/metrics <= {MAX_SCRAPE_AFTER_CYCLE_MS:g} ms after a whole unscraped cycle",
            f"{_ms(after_cycle)} ms",
            after_cycle is not None and after_cycle <= MAX_SCRAPE_AFTER_CYCLE_MS,
        ),
    ]
    print(f"\n== targets at N={daemon.n:,} (daemon) ==", file=out)
    width = max(len(name) for name, _, _ in verdicts)
    for name, measured, passed in verdicts:
        print(f"{name:<{width}}  {'PASS' if passed else 'MISS'}  {measured}", file=out)
    if daemon.ratio > MAX_STEADY_RATIO:
        simulator = daemon.simulator_cpu_percent
        print(
            f"  during the steady cycle the daemon used {daemon.own_cpu_percent:.0f} % of a core"
            + ("" if simulator is None else f" and the simulator {simulator:.0f} %")
            + "; a single-threaded process near 100 % is the bottleneck",
            file=out,
        )
    return all(passed for _, _, passed in verdicts)


def spread_demo(args: argparse.Namespace, workdir: Path, out: TextIO) -> None:
    n, projects = args.spread_endpoints, 1
    scenario = workdir / "scenario-spread.json"
    write_fleet_scenario(scenario, fleet(n, projects), args.latency)
    simulator = SimulatorChild.start(scenario, workdir / "simulator-spread.log")
    runs: list[dict[str, Any]] = []
    try:
        for limit in (0, args.spread_rpm):
            runs.append(
                run_child(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        "spread",
                        "--n",
                        str(n),
                        "--url",
                        simulator.url,
                        "--concurrency",
                        str(args.spread_concurrency),
                        "--interval",
                        str(args.spread_interval),
                        "--max-requests-per-minute",
                        str(limit),
                    ],
                    workdir / f"spread-{limit}.log",
                )
            )
    finally:
        simulator.stop()
    print(
        f"\n== spread demo: {n} endpoints in one project, latency {args.latency:g} s, "
        f"concurrency {args.spread_concurrency}, interval {args.spread_interval:g} s; one cycle "
        "each; requests per second of the cycle (daemon counter, 401 included) ==",
        file=out,
    )
    per_second = [_per_second(run["counts"]) for run in runs]
    titles = ["max_requests_per_minute: null", f"max_requests_per_minute: {args.spread_rpm}"]
    for run, title in zip(runs, titles, strict=True):
        accepted = "" if run["pacing_key_accepted"] else " (key rejected by the config: unpaced)"
        busiest = max((round(b - a) for a, b in itertools.pairwise(run["counts"])), default=0)
        print(
            f"{title}: cycle {run['cycle_seconds']:.2f} s, {round(run['counts'][-1])} requests, "
            f"busiest 100 ms: {busiest} requests{accepted}",
            file=out,
        )
    bar_width = 30
    print(f"{'second':>6}  {titles[0]:<{bar_width + 7}}  {titles[1]}", file=out)
    peaks = [max(series, default=0) or 1 for series in per_second]
    for second in range(max(len(series) for series in per_second)):
        cells = []
        for series, peak in zip(per_second, peaks, strict=True):
            value = series[second] if second < len(series) else None
            if value is None:
                cells.append(f"{'':>5}  {'':<{bar_width}}")
            else:
                bar = "#" * round(value / peak * bar_width)
                cells.append(f"{value:5d}  {bar:<{bar_width}}")
        print(f"{second:>6}  {cells[0]}  {cells[1]}".rstrip(), file=out)
    print(f"(bars scaled to each column's busiest second: {peaks[0]} and {peaks[1]})", file=out)


def _per_second(counts: Sequence[float]) -> list[int]:
    """Counter samples every SAMPLE_EVERY s from app start -> requests in each whole second
    (the last one partial)."""
    step = round(1 / SAMPLE_EVERY)
    marks = [*counts[::step], counts[-1]] if counts else []
    return [round(b - a) for a, b in itertools.pairwise(marks)][: math.ceil(len(counts) / step)]


def pacing_case(args: argparse.Namespace, workdir: Path, out: TextIO) -> bool:
    """Issue 16's case: the same cycle in several config orders; True if each is within
    MAX_PACED_RATIO of its paced bound (plus latency) and grouped within it of interleaved."""
    scenario = workdir / "scenario-pacing.json"
    write_pacing_scenario(scenario, args.pacing_latency)
    simulator = SimulatorChild.start(scenario, workdir / "simulator-pacing.log")
    runs: dict[str, dict[str, Any]] = {}
    try:
        for name in PACING_LAYOUTS:
            runs[name] = run_child(
                [
                    *(sys.executable, __file__, "--worker", "pacing", "--layout", name),
                    *("--url", simulator.url, "--pacing-rpm", str(args.pacing_rpm)),
                    *("--pacing-concurrency", str(args.pacing_concurrency)),
                ],
                workdir / f"pacing-{name}.log",
            )
    finally:
        simulator.stop()
    print(
        f"\n== pacing across projects: {args.pacing_rpm} requests/min per project, concurrency "
        f"{args.pacing_concurrency}, latency {args.pacing_latency:g} s; one cycle each; target "
        f"cycle <= {MAX_PACED_RATIO:g} x paced bound + latency ==",
        file=out,
    )
    print(
        f"{'layout':<30} {'endpoints':>9} {'up':>5} {'cycle s':>8} {'paced bound s':>13} "
        f"{'ratio':>6}  verdict",
        file=out,
    )
    passed = True
    for name, layout in PACING_LAYOUTS.items():
        run = runs[name]
        bound = layout.paced_bound(args.pacing_rpm)
        ok = run["cycle_seconds"] <= MAX_PACED_RATIO * bound + args.pacing_latency
        ok = ok and run["up"] == run["endpoints"] and run["pacing_key_accepted"]
        passed = passed and ok
        print(
            f"{layout.title:<30} {run['endpoints']:>9} {run['up']:>5} "
            f"{run['cycle_seconds']:>8.2f} {bound:>13.2f} {run['cycle_seconds'] / bound:>6.2f}  "
            f"{'PASS' if ok else 'MISS'}",
            file=out,
        )
    grouped, interleaved = runs["grouped"]["cycle_seconds"], runs["interleaved"]["cycle_seconds"]
    ok = grouped <= MAX_PACED_RATIO * interleaved
    print(
        f"grouped / interleaved: {grouped / interleaved:.2f} (target <= {MAX_PACED_RATIO:g}) "
        f"{'PASS' if ok else 'MISS'}",
        file=out,
    )
    return passed and ok


def orchestrate(args: argparse.Namespace, out: TextIO) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="atlas-poll-bench-"))
    print_header(args, workdir, out)
    if args.only_pacing_case:
        return run_pacing_case(args, workdir, out, passed=True)
    rows: list[Row] = []
    pacing_accepted = True
    try:
        for n in args.sizes:
            daemon, baseline, accepted = measure_size(args, n, workdir, out)
            rows.extend((daemon, baseline))
            pacing_accepted = pacing_accepted and accepted
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        if rows:
            print_table(rows, out)
        return EXIT_ERROR
    print(file=out)
    print_table(rows, out)
    if not pacing_accepted:
        print(
            "note: the config rejected poll.max_requests_per_minute; the daemon ran without it",
            file=out,
        )
    print_notes(rows, out)
    largest = max(args.sizes)
    daemon_row = next(r for r in rows if r.n == largest and r.implementation == "daemon")
    baseline_row = next(r for r in rows if r.n == largest and r.implementation == "baseline")
    passed = judge(daemon_row, baseline_row, out)
    out.flush()
    if args.spread_demo:
        try:
            spread_demo(args, workdir, out)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as error:
            print(f"error in the spread demo: {error}", file=sys.stderr)
            return EXIT_ERROR
    out.flush()
    if args.pacing_case:
        return run_pacing_case(args, workdir, out, passed)
    return EXIT_PASS if passed else EXIT_MISS


def run_pacing_case(args: argparse.Namespace, workdir: Path, out: TextIO, passed: bool) -> int:
    try:
        passed = pacing_case(args, workdir, out) and passed
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as error:
        print(f"error in the pacing case: {error}", file=sys.stderr)
        return EXIT_ERROR
    out.flush()
    return EXIT_PASS if passed else EXIT_MISS


# --------------------------------------------------------------------------- main


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure the daemon polling N simulated endpoints (cycle time, requests, CPU, RSS, "
            "/metrics latency) beside a requests + threads baseline; judge the largest N."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=_sizes, default="100,1000,10000", help="values of N")
    parser.add_argument("--latency", type=float, default=0.05, help="simulator delay per GET, s")
    parser.add_argument("--concurrency", type=int, default=100, help="requests in flight")
    parser.add_argument("--projects", type=int, default=100, help="projects the N spread over")
    parser.add_argument("--interval", type=float, default=0.05, help="daemon poll.interval_seconds")
    parser.add_argument(
        "--spaced-every",
        type=float,
        default=1.0,
        help="seconds between the Prometheus-like scrapes of cycle 5",
    )
    parser.add_argument(
        "--spread-demo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the table, show per-project pacing on one project",
    )
    parser.add_argument(
        "--state-file",
        action="store_true",
        help="run the daemon with state.path set (a fresh SQLite file per N, docs/state.md)",
    )
    parser.add_argument("--spread-endpoints", type=int, default=300)
    parser.add_argument("--spread-concurrency", type=int, default=20)
    parser.add_argument("--spread-interval", type=float, default=30.0)
    parser.add_argument(
        "--spread-rpm", type=int, default=600, help="the paced run's max_requests_per_minute"
    )
    parser.add_argument(
        "--pacing-case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the spread demo, time paced cycles in several config orders (issue 16)",
    )
    parser.add_argument(
        "--only-pacing-case", action="store_true", help="run the pacing case and nothing else"
    )
    parser.add_argument("--pacing-rpm", type=int, default=600, help="pacing case's limit")
    parser.add_argument("--pacing-concurrency", type=int, default=50)
    parser.add_argument(
        "--pacing-latency", type=float, default=0.02, help="pacing case's delay per GET, s"
    )
    workers = parser.add_argument_group("internal: one measurement in a child process")
    workers.add_argument("--worker", choices=("daemon", "scraper", "spread", "pacing"))
    workers.add_argument("--layout", choices=tuple(PACING_LAYOUTS), help="pacing worker")
    workers.add_argument("--n", type=int, help="endpoints")
    workers.add_argument("--url", help="the simulator's base URL")
    workers.add_argument("--simulator-pid", type=int)
    workers.add_argument("--every", type=float, help="scraper worker: seconds apart")
    workers.add_argument("--state-path", help="daemon worker: its state.path")
    workers.add_argument(
        "--max-requests-per-minute", type=int, default=0, help="spread worker; 0 = null"
    )
    args = parser.parse_args(argv)
    check_bounds(
        parser,
        args,
        at_least_one=(
            "concurrency",
            "projects",
            "spread_endpoints",
            "spread_concurrency",
            "pacing_rpm",
            "pacing_concurrency",
        ),
        positive=("latency", "interval", "spread_interval", "spaced_every", "pacing_latency"),
    )
    if args.worker in ("daemon", "spread") and (args.n is None or args.url is None):
        parser.error(f"--worker {args.worker} needs --n and --url")
    if args.worker == "pacing" and (args.layout is None or args.url is None):
        parser.error("--worker pacing needs --layout and --url")
    return args


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker == "daemon":
        return asyncio.run(daemon_worker(args))
    if args.worker == "spread":
        return asyncio.run(spread_worker(args))
    if args.worker == "pacing":
        return asyncio.run(pacing_worker(args))
    return scraper_worker(sys.stdout, args.every)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(args)), flush=True)
        return EXIT_PASS
    try:
        return orchestrate(args, sys.stdout)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
