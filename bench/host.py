"""What the benchmarks read about the processes they measure and the machine they ran on.

Shared by bench/poll.py, bench/baseline_requests.py and bench/soak.py, which are run as
scripts (``python bench/poll.py``), so this directory is on their import path.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


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
