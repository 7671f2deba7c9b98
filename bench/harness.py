"""The benchmarks' one harness: the simulator child, the fleet and its scenario file, the
argument checks, and what they read about the processes they measure and the machine.

Shared by bench/poll.py, bench/baseline_requests.py and bench/soak.py, which are run as
scripts (``python bench/poll.py``), so this directory is on their import path. It imports
nothing of the monitor: the baseline poller must not.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PUBLIC_KEY = "bench-public-key"
PRIVATE_KEY = "bench-private-key"
# What Prometheus 2.x sends when it scrapes; the daemon then answers OpenMetrics.
SCRAPE_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SIMULATOR_START_TIMEOUT = 180.0
"""A scenario of 10,000 endpoints takes the simulator a while to load on a busy machine."""
CHILD_STOP_TIMEOUT = 10.0


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the bench dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def proc_status_kib(pid: int | str, name: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


def cpu_ticks(pid: int | None) -> int | None:
    """utime + stime of a process in clock ticks; None without a pid or once it is gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def cpu_seconds_of(pid: int | None) -> float | None:
    """utime + stime of a process, in seconds; None without a pid or once it is gone."""
    ticks = cpu_ticks(pid)
    return None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    command = ["git", "-C", str(root), *args]
    # A fixed git command on this checkout; nothing comes from outside.
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    return done.stdout.strip()


def code_revision() -> str:
    """The checkout's commit and whether monitor/ has uncommitted changes, for the record."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "monitor")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"git {head}" + (", monitor/ has uncommitted changes" if dirty else ", monitor/ clean")


def machine_description() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if text.startswith("model name"):
                model = text.partition(":")[2].strip()
                break
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"nproc {len(os.sched_getaffinity(0))} ({model}), {platform.system()} "
        f"{platform.release()} {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, load average {load}"
    )


def simulator_command(scenario: Path, public_key: str, private_key: str) -> list[str]:
    """``python -m monitor simulate`` on a free 127.0.0.1 port (it announces the port in its
    ``simulator_started`` line), on ``scenario``, accepting the given keys."""
    return [
        *(sys.executable, "-m", "monitor", "simulate", "--host", "127.0.0.1", "--port", "0"),
        *("--scenario", str(scenario), "--public-key", public_key, "--private-key", private_key),
    ]


# --------------------------------------------------------------------------- the fleet


def ids_of(number: int, projects: int) -> tuple[str, str, str]:
    """(group_id, private_link_id, interface_endpoint_id) of endpoint ``number``: endpoints
    are dealt round-robin over ``projects`` projects, one private endpoint service each."""
    project = number % projects
    return f"{project + 1:024x}", f"{0x5E000000 + project:024x}", f"vpce-{number + 1:017x}"


def fleet(count: int, projects: int) -> list[dict[str, str]]:
    """The ids of ``count`` endpoints over ``projects`` projects, as config and scenario take
    them."""
    keys = ("group_id", "private_link_id", "interface_endpoint_id")
    return [dict(zip(keys, ids_of(number, projects), strict=True)) for number in range(count)]


def available_after(latency: float, endpoints: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Scenario entries: each endpoint AVAILABLE, answering every GET ``latency`` s late."""
    fault = {"latency_seconds": latency, "methods": ["GET"]}
    return [{**ids, "status": "AVAILABLE", "faults": [fault]} for ids in endpoints]


def write_scenario(path: Path, endpoints: Sequence[Mapping[str, Any]], **settings: Any) -> None:
    """A scenario file (JSON, which the simulator's YAML reader takes) of ``endpoints`` and
    the scenario's top-level ``settings``."""
    path.write_text(json.dumps({**settings, "endpoints": list(endpoints)}), encoding="utf-8")


# --------------------------------------------------------------------------- the simulator


class SimulatorChild:
    """``python -m monitor simulate`` on a free 127.0.0.1 port, as a child process of its own
    session (Ctrl-C reaches the bench only, which then stops it in order), its output in
    ``log_path``; ``url`` is what it announced. Blocking: async benches run ``start`` and
    ``stop`` in a thread."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.url = ""

    @classmethod
    def start(
        cls,
        scenario: Path,
        log_path: Path,
        *,
        give_up: Callable[[], bool] = lambda: False,
    ) -> SimulatorChild:
        """Start it and wait for its ``simulator_started`` line. Raises KeyboardInterrupt
        when ``give_up`` says so first (a stop signal), RuntimeError with its output when it
        exits or stays silent for SIMULATOR_START_TIMEOUT; the child is stopped either way."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("MONGODB_")}
        with log_path.open("wb") as log_file:
            # A fixed command: this interpreter and the monitor package.
            process = subprocess.Popen(  # noqa: S603
                simulator_command(scenario, PUBLIC_KEY, PRIVATE_KEY),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child = cls(process, log_path)
        deadline = time.monotonic() + SIMULATOR_START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None and not give_up():
            for line in child.output().splitlines():
                if "simulator_started" in line:
                    child.url = str(json.loads(line)["url"])
                    return child
            time.sleep(0.05)
        child.stop()
        if give_up():
            raise KeyboardInterrupt
        raise RuntimeError(
            f"the simulator did not start (exit status {process.returncode}); its output:\n"
            f"{child.output()}"
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(CHILD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- arguments


def check_bounds(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    at_least_one: Iterable[str] = (),
    positive: Iterable[str] = (),
) -> None:
    """Refuse counts below 1 and durations or rates that are not positive, naming the option."""
    for name in at_least_one:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
