#!/usr/bin/env python3
"""The baseline ``bench/poll.py`` measures the daemon against: what a user would otherwise write.

Why
---
"Poll a few thousand Atlas interface endpoints" is, without this project, a short script:
``requests`` with ``HTTPDigestAuth`` in a ``concurrent.futures.ThreadPoolExecutor``, one
``requests.Session`` per worker thread (a Session is not thread-safe), each request parsed as
JSON for its ``connectionStatus``. The daemon's claims (as fast as the latency allows, one
request per endpoint per cycle, a fraction of the CPU) only mean something beside that.

How
---
The endpoints are generated exactly as ``bench/poll.py`` generates them (same ids, so the
simulator that script started knows them). The polls run ``--cycles`` times back to back
(default 3) with ``--concurrency`` worker threads. Each thread's Session has its own
``HTTPDigestAuth`` (requests keeps the Digest state per thread anyway), so each thread pays
one 401 challenge on its first request and answers preemptively from then on, as the daemon
does once per process. Per cycle it records the wall time, this process's CPU time
(``time.process_time``, all threads), and the simulator's request count before and after
(``GET /_simulator/stats``: every request, 401 challenges included; nothing else runs
against the simulator meanwhile, so the difference is this cycle's). After the last cycle it
reads its own ``VmRSS``. The result is one JSON line on stdout::

    .venv/bin/python bench/baseline_requests.py --n 1000 --url http://127.0.0.1:PORT \\
        --concurrency 100 --cycles 3 --projects 100 --public-key K --private-key S

``--simulator-pid`` adds the simulator's CPU use during each cycle (from ``/proc/PID/stat``).
A poll that fails (an HTTP error, a timeout, a body without ``connectionStatus``) is counted
in ``errors``, not retried: the daemon runs with ``atlas.max_retries: 0`` in the same bench.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests
from harness import cpu_ticks, ids_of, proc_status_kib
from requests.adapters import HTTPAdapter
from requests.auth import HTTPDigestAuth

API_ROOT = "/api/atlas/v1.0"
STATS_PATH = "/_simulator/stats"


def fleet_paths(count: int, projects: int) -> list[str]:
    """The API path of each endpoint: the fleet bench/poll.py configures (``harness.ids_of``)."""
    return [
        "/groups/{}/privateEndpoint/{}/interfaceEndpoints/{}".format(*ids_of(number, projects))
        for number in range(count)
    ]


class Poller:
    """One Session (with its own Digest state) per worker thread, created on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._api_url = args.url.rstrip("/") + API_ROOT
        self._auth = (args.public_key, args.private_key)
        self._pool_size = args.pool_size
        self._timeout = args.timeout
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.auth = HTTPDigestAuth(*self._auth)
            session.headers["Accept"] = "application/json"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def poll(self, path: str) -> str | None:
        """The endpoint's connectionStatus, or None when the poll failed."""
        try:
            response = self._session().get(self._api_url + path, timeout=self._timeout)
            if response.status_code != 200:
                return None
            status = response.json().get("connectionStatus")
        except (requests.RequestException, ValueError, AttributeError):
            return None
        return status if isinstance(status, str) else None

    def close(self) -> None:
        for session in self._sessions:
            session.close()


def simulator_total(url: str) -> int:
    response = requests.get(url.rstrip("/") + STATS_PATH, timeout=30)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return int(stats["total"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = fleet_paths(args.n, args.projects)
    poller = Poller(args)
    clock_ticks = os.sysconf("SC_CLK_TCK")
    cycles: list[dict[str, Any]] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for _ in range(args.cycles):
                before = simulator_total(args.url)
                sim_before = cpu_ticks(args.simulator_pid)
                cpu_before = time.process_time()
                wall_before = time.perf_counter()
                statuses = list(pool.map(poller.poll, paths))
                wall = time.perf_counter() - wall_before
                cpu = time.process_time() - cpu_before
                sim_after = cpu_ticks(args.simulator_pid)
                after = simulator_total(args.url)
                sim_cpu = (
                    None
                    if sim_before is None or sim_after is None
                    else (sim_after - sim_before) / clock_ticks
                )
                cycles.append(
                    {
                        "wall_seconds": wall,
                        "cpu_seconds": cpu,
                        "requests": after - before,
                        "errors": sum(status is None for status in statuses),
                        "available": sum(status == "AVAILABLE" for status in statuses),
                        "simulator_cpu_seconds": sim_cpu,
                    }
                )
        rss = proc_status_kib("self", "VmRSS") or 0
    finally:
        poller.close()
    return {
        "implementation": "baseline",
        "n": args.n,
        "concurrency": args.concurrency,
        "cycles": cycles,
        "rss_kib": rss,
        "requests_version": requests.__version__,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Poll N simulated Atlas interface endpoints with requests + HTTPDigestAuth in a "
            "thread pool; print one JSON line of timings, CPU, request counts and RSS."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, required=True, help="endpoints")
    parser.add_argument("--url", required=True, help="the simulator's base URL")
    parser.add_argument("--concurrency", type=int, default=100, help="worker threads")
    parser.add_argument("--cycles", type=int, default=3, help="cycles, back to back")
    parser.add_argument("--projects", type=int, default=100, help="projects the N spread over")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, s")
    parser.add_argument(
        "--pool-size", type=int, default=1, help="HTTPAdapter pool_maxsize of each thread's Session"
    )
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--simulator-pid", type=int, help="to read the simulator's CPU time")
    args = parser.parse_args(argv)
    for name in ("n", "concurrency", "cycles", "projects", "pool_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    result = run(parse_args(argv))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
