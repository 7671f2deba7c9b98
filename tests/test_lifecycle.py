"""The daemon's life as an operator's supervisor sees it: `run` as a real child process,
stopped by signals at awkward moments, and started while Atlas cannot be reached.

Every wait is bounded (a log line, an accepted connection or a simulator counter with a
deadline); only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    MONITOR_PROGRAM,
    WARNINGS_ENV,
    Process,
    assert_clean_shutdown,
    config_document,
    endpoint_entry,
    endpoint_id,
    http_get,
    is_event,
    run_daemon,
    subprocess_env,
    unused_port,
    write_yaml,
)


def samples(metrics_text: str, name: str) -> dict[str, float]:
    """interface endpoint id -> value of the per-endpoint metric ``name``."""
    return {
        sample.labels["interface_endpoint_id"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name
    }


def metric_names(metrics_text: str) -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    }


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


SLOW_SECONDS = 3


def slow_atlas(tmp_path: Path, start: Callable[..., Process], entries: list[dict[str, Any]]) -> str:
    """A simulator child whose every GET of ``entries`` takes SLOW_SECONDS; returns its URL."""
    slow = {"faults": [{"latency_seconds": SLOW_SECONDS, "methods": ["GET"]}]}
    return simulator_child(tmp_path, start, [{**entry, **slow} for entry in entries])


def simulator_child(
    tmp_path: Path, start: Callable[..., Process], scenario_endpoints: list[dict[str, Any]]
) -> str:
    """A simulator child serving ``scenario_endpoints`` (scenario entries); returns its URL."""
    scenario = write_yaml(tmp_path / "scenario.yaml", {"endpoints": scenario_endpoints})
    simulator = start(["simulate", "--port", "0", "--scenario", str(scenario)])
    return str(json.loads(simulator.wait_for_line(is_event("simulator_started")))["url"])


def gets_received(simulator_url: str) -> int:
    """GETs the simulator has accepted (and, with latency, is now delaying)."""
    with urllib.request.urlopen(f"{simulator_url}/_simulator/stats", timeout=5) as response:  # noqa: S310
        stats = json.load(response)
    return sum(stats.get("by_endpoint", {}).get("GET", {}).values())


def stop_and_time(daemon: Process, sig: signal.Signals) -> tuple[int, float]:
    stopping = time.monotonic()
    exit_code = daemon.stop(sig, timeout=10)
    return exit_code, time.monotonic() - stopping


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_requests_are_in_flight_cancels_the_cycle_and_exits_0(
    tmp_path: Path, children: Callable[..., Process], sig: signal.Signals
) -> None:
    entries = [endpoint_entry(interface_endpoint_id=endpoint_id(n)) for n in (1, 2)]
    atlas_url = slow_atlas(tmp_path, children, entries)
    daemon, _ = run_daemon(
        tmp_path,
        children,
        atlas_url,
        atlas={"timeout_seconds": 4 * SLOW_SECONDS, "max_retries": 0},
        poll={"interval_seconds": 60, "concurrency": 2, "max_requests_per_minute": None},
        endpoints=entries,
    )
    # The simulator counts a GET when it starts delaying it, so the cycle's first poll is
    # on the wire (the client sends the session's first exchange alone, for the Digest
    # challenge; the second endpoint waits behind it).
    wait_until(lambda: gets_received(atlas_url) >= 1, "a GET reaches the simulator")
    assert daemon.popen.poll() is None

    exit_code, stopped_after = stop_and_time(daemon, sig)

    lines = daemon.all_output()
    assert exit_code == 0, lines
    assert stopped_after < SLOW_SECONDS, "the in-flight requests were awaited, not cancelled"
    assert not any(is_event("poll_cycle_finished", "poll_cycle_overran")(line) for line in lines)
    assert any(is_event("poll_cycle_cancelled")(line) for line in lines)
    assert_clean_shutdown(lines, sig.name)


def test_sigterm_during_retry_back_off_exits_0_and_until_then_the_daemon_is_live_not_ready(
    tmp_path: Path, children: Callable[..., Process]
) -> None:
    """Atlas unreachable (a closed port) and ten retries: the first cycle is still backing
    off when we look, so /readyz says 503 while /healthz and /metrics answer 200, every
    endpoint shows up 0 and no status series; then SIGTERM ends the back-off sleep at once."""
    entries = [endpoint_entry(interface_endpoint_id=endpoint_id(n)) for n in (1, 2)]
    daemon, url = run_daemon(
        tmp_path,
        children,
        f"http://127.0.0.1:{unused_port()}",
        atlas={"timeout_seconds": 2, "max_retries": 10},
        poll={"interval_seconds": 60, "concurrency": 2, "max_requests_per_minute": None},
        endpoints=entries,
    )
    # The first retry's back-off is under 0.5 s, but the nine after it add up to minutes.
    daemon.wait_for_line(is_event("atlas_request_retry"))

    ready = http_get(f"{url}/readyz")
    health = http_get(f"{url}/healthz")
    metrics = http_get(f"{url}/metrics")

    exit_code, stopped_after = stop_and_time(daemon, signal.SIGTERM)
    lines = daemon.all_output()
    assert ready[0] == 503, ready
    assert health[0] == 200, health
    assert metrics[0] == 200, metrics
    ids = {entry["interface_endpoint_id"] for entry in entries}
    assert samples(metrics[2], "atlas_interface_endpoint_up") == dict.fromkeys(ids, 0.0)
    assert samples(metrics[2], "atlas_interface_endpoint_status") == {}
    assert "atlas_monitor_last_poll_cycle_timestamp_seconds" not in metric_names(metrics[2])
    assert exit_code == 0, lines
    assert stopped_after < 5
    assert not any(is_event("poll_cycle_finished", "poll_cycle_overran")(line) for line in lines)
    assert_clean_shutdown(lines, "SIGTERM")


def test_a_completed_cycle_makes_the_daemon_ready_even_when_every_poll_failed(
    tmp_path: Path, children: Callable[..., Process]
) -> None:
    """Readiness means "the first cycle has completed", not "Atlas answered": with Atlas
    unreachable (connection refused) /readyz turns 200 after the first cycle, while the
    metrics say the truth (up 0 for every endpoint, no status series)."""
    entries = [endpoint_entry(interface_endpoint_id=endpoint_id(n)) for n in (1, 2, 3)]
    daemon, url = run_daemon(
        tmp_path,
        children,
        f"http://127.0.0.1:{unused_port()}",
        atlas={"timeout_seconds": 2, "max_retries": 0},
        poll={"interval_seconds": 60, "concurrency": 2, "max_requests_per_minute": None},
        endpoints=entries,
    )
    finished = json.loads(daemon.wait_for_line(is_event("poll_cycle_finished")))

    ready = http_get(f"{url}/readyz")
    health = http_get(f"{url}/healthz")
    metrics = http_get(f"{url}/metrics")
    openmetrics = http_get(f"{url}/metrics", accept="application/openmetrics-text")

    exit_code, _ = stop_and_time(daemon, signal.SIGTERM)
    lines = daemon.all_output()
    assert (finished["endpoints"], finished["up"]) == (3, 0)
    failures = [json.loads(line) for line in lines if is_event("endpoint_poll_failed")(line)]
    assert {line["interface_endpoint_id"] for line in failures} == {
        entry["interface_endpoint_id"] for entry in entries
    }
    assert all(line["cause"].startswith("cannot connect: ") for line in failures)
    assert ready == (200, "text/plain; charset=utf-8", "ready\n")
    assert health[0] == 200
    assert metrics[0] == 200
    assert openmetrics[0] == 200
    assert openmetrics[1].startswith("application/openmetrics-text")
    ids = {entry["interface_endpoint_id"] for entry in entries}
    for text in (metrics[2], openmetrics[2]):
        assert samples(text, "atlas_interface_endpoint_up") == dict.fromkeys(ids, 0.0)
        assert samples(text, "atlas_interface_endpoint_status") == {}
    assert "atlas_monitor_last_poll_cycle_timestamp_seconds" in metric_names(metrics[2])
    assert exit_code == 0, lines
    assert_clean_shutdown(lines, "SIGTERM")


def hold_a_scrape_open(url: str) -> socket.socket:
    """A scrape whose request body never finishes arriving: aiohttp answers it, then keeps
    the handler reading the body, so the daemon's shutdown waits its 2 s grace for it."""
    port = int(url.rsplit(":", 1)[1])
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    )
    connection.sendall(b"partial")
    assert connection.recv(64).startswith(b"HTTP/1.1 200 ")
    return connection


@pytest.mark.parametrize(
    "second", [signal.SIGTERM, signal.SIGINT], ids=["then-SIGTERM", "then-SIGINT"]
)
def test_a_second_signal_during_shutdown_is_ignored_and_the_exit_is_still_0(
    tmp_path: Path, children: Callable[..., Process], second: signal.Signals
) -> None:
    daemon, url = run_daemon(
        tmp_path,
        children,
        f"http://127.0.0.1:{unused_port()}",
        atlas={"timeout_seconds": 2, "max_retries": 0},
        poll={"interval_seconds": 60, "max_requests_per_minute": None},
    )
    daemon.wait_for_line(is_event("poll_cycle_finished"))
    with hold_a_scrape_open(url):
        stopping = time.monotonic()
        daemon.popen.send_signal(signal.SIGTERM)
        daemon.wait_for_line(is_event("stopping"))
        assert daemon.popen.poll() is None, "shutdown was over before the second signal"
        daemon.popen.send_signal(second)
        exit_code = daemon.popen.wait(timeout=10)
    stopped_after = time.monotonic() - stopping

    lines = daemon.all_output()
    assert exit_code == 0, lines
    assert stopped_after < 10
    assert_clean_shutdown(lines, "SIGTERM")


@pytest.mark.parametrize(
    "second", [signal.SIGTERM, signal.SIGINT], ids=["then-SIGTERM", "then-SIGINT"]
)
def test_a_second_signal_after_stopped_is_logged_still_exits_0(
    tmp_path: Path, children: Callable[..., Process], second: signal.Signals
) -> None:
    """The last moments of a shutdown: `stopped` is logged, the interpreter is winding
    down. A supervisor or an impatient Ctrl-C repeating the signal now must not turn a
    clean stop into death by signal (-15) or a KeyboardInterrupt (130).

    (When the process has already exited, the second signal is not sent and this passes.)
    """
    daemon, _ = run_daemon(
        tmp_path,
        children,
        f"http://127.0.0.1:{unused_port()}",
        atlas={"timeout_seconds": 2, "max_retries": 0},
        poll={"interval_seconds": 60, "max_requests_per_minute": None},
    )
    daemon.wait_for_line(is_event("poll_cycle_finished"))
    daemon.popen.send_signal(signal.SIGTERM)
    daemon.wait_for_line(is_event("stopped"))
    daemon.popen.send_signal(second)  # a no-op if it has exited meanwhile
    exit_code = daemon.popen.wait(timeout=10)

    lines = daemon.all_output()
    assert exit_code == 0, f"exit {exit_code} after a second {second.name}; output: {lines}"
    assert_clean_shutdown(lines, "SIGTERM")


def handles_sighup(pid: int) -> bool:
    """Whether SIGHUP no longer has its default (fatal) action in ``pid``: ignored or caught,
    as /proc/PID/status's signal masks say."""
    masks = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("SigIgn", "SigCgt"):
            masks[name] = int(value, 16)
    return bool((masks["SigIgn"] | masks["SigCgt"]) & (1 << (signal.SIGHUP - 1)))


def test_sighups_from_the_first_moments_of_start_up_never_kill_the_daemon(
    tmp_path: Path, children: Callable[..., Process]
) -> None:
    """A SIGHUP sent while the program is still importing (about a second) used to hit the
    default action and end it with 129. The entry point ignores SIGHUP before the imports,
    so from the moment /proc shows that, a SIGHUP every 20 ms until `monitor_started` (and
    a few after, which reload) leaves a daemon that stops on SIGTERM with 0."""
    document = config_document(
        atlas={"base_url": f"http://127.0.0.1:{unused_port()}", "max_retries": 0},
        poll={"interval_seconds": 60, "max_requests_per_minute": None},
        server={"host": "127.0.0.1", "port": unused_port()},
    )
    daemon = children(["run", "--config", str(write_yaml(tmp_path / "config.yaml", document))])
    pid = daemon.popen.pid
    wait_until(lambda: handles_sighup(pid), "SIGHUP ignored or caught", timeout=5)
    sent_before_start = 0
    deadline = time.monotonic() + 30
    while not any(is_event("monitor_started")(line) for line in daemon.seen):
        assert time.monotonic() < deadline, f"no monitor_started: {daemon.seen}"
        assert daemon.popen.poll() is None, f"died: {daemon.popen.returncode} {daemon.seen}"
        daemon.popen.send_signal(signal.SIGHUP)
        sent_before_start += 1
        with contextlib.suppress(queue.Empty):
            daemon.seen.append(daemon.lines.get(timeout=0.02))
    for _ in range(5):
        daemon.popen.send_signal(signal.SIGHUP)
    daemon.wait_for_line(is_event("config_reloaded"))

    exit_code, _ = stop_and_time(daemon, signal.SIGTERM)
    lines = daemon.all_output()
    assert sent_before_start >= 5, "the start-up was over before the SIGHUPs began"
    assert exit_code == 0, lines
    assert_clean_shutdown(lines, "SIGTERM")


def sample_value(metrics_text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def metrics_when_served(url: str) -> str | None:
    """The daemon's /metrics text, or None while it does not listen yet."""
    try:
        status, _, text = http_get(f"{url}/metrics")
    except (urllib.error.URLError, ConnectionError):
        return None
    return text if status == 200 else None


@contextlib.contextmanager
def dead_stdout(kind: str) -> Iterator[int]:
    """A descriptor for a child's stdout that refuses every write: a pipe whose reader has
    gone (as `| head -1` leaves it: EPIPE) or /dev/full (a full disk: ENOSPC)."""
    if kind == "closed-pipe":
        read_end, write_end = os.pipe()
        os.close(read_end)
    else:
        write_end = os.open("/dev/full", os.O_WRONLY)
    try:
        yield write_end
    finally:
        os.close(write_end)


@pytest.mark.parametrize("stdout", ["closed-pipe", "dev-full"])
def test_a_dead_stdout_loses_log_lines_but_never_alerts_state_or_the_daemon(
    tmp_path: Path, children: Callable[..., Process], stdout: str
) -> None:
    """Every cycle has lines to write (a REJECTED endpoint's alert, the cycle summary) and
    none can be: still the daemon starts, polls, counts the alert it decided, keeps `up` and
    the last success fresh, reports the lost lines on stderr once and in a counter, answers
    /readyz 503 saying why, and stops on SIGTERM with 0."""
    entry = endpoint_entry()
    atlas_url = simulator_child(tmp_path, children, [{**entry, "status": "REJECTED"}])
    port = unused_port()
    config = write_yaml(
        tmp_path / "config.yaml",
        config_document(
            atlas={"base_url": atlas_url, "max_retries": 0},
            poll={"interval_seconds": 0.5, "max_requests_per_minute": None},
            server={"host": "127.0.0.1", "port": port},
            endpoints=[entry],
        ),
    )
    url = f"http://127.0.0.1:{port}"
    stderr_path = tmp_path / "stderr.txt"
    with dead_stdout(stdout) as out, stderr_path.open("w") as err:
        daemon = subprocess.Popen(
            [*MONITOR_PROGRAM, "run", "--config", str(config)],
            stdout=out,
            stderr=err,
            env=subprocess_env(**WARNINGS_ENV),
        )
    try:
        texts: list[str] = []

        def after_cycles(count: int) -> bool:
            text = metrics_when_served(url)
            if text is None or sample_value(text, "atlas_interface_endpoint_up") != 1:
                return False
            texts.append(text)
            return len(texts) >= count

        wait_until(lambda: after_cycles(1), "an answered poll", timeout=20)
        first_success = sample_value(
            texts[-1], "atlas_interface_endpoint_last_success_timestamp_seconds"
        )
        wait_until(
            lambda: (
                after_cycles(2)
                and sample_value(
                    texts[-1], "atlas_interface_endpoint_last_success_timestamp_seconds"
                )
                != first_success
            ),
            "a later cycle's answer",
        )
        ready = http_get(f"{url}/readyz")
        health = http_get(f"{url}/healthz")
    finally:
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(timeout=10)
    metrics = texts[-1]
    errors = stderr_path.read_text(encoding="utf-8")
    assert exit_code == 0, errors
    assert health[0] == 200
    assert ready[0] == 503
    assert ready[2].startswith("log lines cannot be written: "), ready
    assert sample_value(metrics, "atlas_monitor_alerts_total", alert="rejected") == 1
    assert sample_value(metrics, "atlas_interface_endpoint_alert_firing", alert="rejected") == 1
    lost = sample_value(metrics, "atlas_monitor_log_write_errors_total")
    assert lost is not None
    assert lost >= 3  # monitor_started, the alert, a cycle summary at least
    reports = [line for line in errors.splitlines() if "cannot write log lines" in line]
    assert len(reports) == 1, errors
    for debris in ("Traceback", "Exception ignored", "cannot listen"):
        assert debris not in errors, errors


STORM_ENDPOINTS = 10_000
PROBE_TIMEOUT_SECONDS = 4.0
"""The image's HEALTHCHECK gives /healthz 4 s (Dockerfile); a daemon slower than that during a
reload storm is declared unhealthy. Before the fix the storm below held it for tens of s."""


class HealthProbe:
    """GET /healthz back to back in a thread until stopped; keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self._url = f"{url}/healthz"
        self._stop = threading.Event()
        self.slowest = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = http_get(self._url)[0]
            except OSError as error:  # a timeout or a refused connection
                self.failures.append(repr(error))
                continue
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.answers += status == 200
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def post_reload(url: str) -> int:
    request = urllib.request.Request(f"{url}/-/reload", method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def test_a_reload_storm_on_a_large_config_is_merged_and_neither_stalls_health_nor_shutdown(
    tmp_path: Path, children: Callable[..., Process]
) -> None:
    """10,000 endpoints take seconds to parse. Ten concurrent POST /-/reload and 200
    SIGHUPs in 2 s used to cost a serialised reload each, parsed on the event loop:
    /healthz stalled for tens of seconds and a SIGTERM waited behind them all. Now the
    requests share a few reloads parsed in a thread, /healthz answers within a probe's
    timeout throughout, and a SIGTERM during a further storm exits 0 within 10 s."""
    entries = [endpoint_entry(interface_endpoint_id=endpoint_id(n)) for n in range(STORM_ENDPOINTS)]
    port = unused_port()
    config = write_yaml(
        tmp_path / "config.yaml",
        config_document(
            atlas={"base_url": f"http://127.0.0.1:{unused_port()}", "max_retries": 0},
            poll={"interval_seconds": 3600, "max_requests_per_minute": None},
            server={"host": "127.0.0.1", "port": port, "enable_reload": True},
            endpoints=entries,
        ),
    )
    daemon = children(["run", "--config", str(config)])
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: metrics_when_served(url) is not None, "the daemon serves", timeout=90)
    probe = HealthProbe(url)
    try:
        with ThreadPoolExecutor(max_workers=10) as posters:
            posted = [posters.submit(post_reload, url) for _ in range(10)]
            for _ in range(200):
                daemon.popen.send_signal(signal.SIGHUP)
                time.sleep(0.01)  # the pace of the burst: 200 signals in about 2 s
            statuses = [answer.result(timeout=120) for answer in posted]
    finally:
        probe.stop()
    # A last storm, and SIGTERM in its midst.
    for _ in range(50):
        daemon.popen.send_signal(signal.SIGHUP)
    exit_code, stopped_after = stop_and_time(daemon, signal.SIGTERM)
    lines = daemon.all_output()
    reloads = [json.loads(line) for line in lines if is_event("config_reloaded")(line)]
    assert exit_code == 0, lines[-20:]
    assert stopped_after < 10
    assert statuses == [200] * 10
    assert 2 <= len(reloads) <= 4, [(line["trigger"], line["requests"]) for line in reloads]
    assert sum(line["requests"] for line in reloads) >= 10
    assert probe.failures == []
    assert probe.answers >= 10
    assert probe.slowest < PROBE_TIMEOUT_SECONDS, f"/healthz took {probe.slowest:.2f} s"


FLOOD_DESCRIPTOR_LIMIT = 64
"""`ulimit -n` of the flooded daemon: its listener cap is then connection_cap's minimum."""


def test_a_connection_flood_at_a_low_descriptor_limit_leaves_polling_and_health_alone(
    tmp_path: Path, children: Callable[..., Process]
) -> None:
    """At `ulimit -n 1024` about 1,100 idle connections used to take every descriptor:
    /healthz timed out, asyncio logged its accept error hundreds of thousands of times and
    polls failed with "Too many open files" into false `unreachable` alerts. Here 300 idle
    and half-sent connections against a limit of 64: the listener's cap closes the oldest
    to make room, so /healthz answers, every cycle still gets Atlas' answer, no alert fires
    and the accept error is never logged raw."""
    entry = endpoint_entry()
    atlas_url = simulator_child(tmp_path, children, [entry])
    port = unused_port()
    config = write_yaml(
        tmp_path / "config.yaml",
        config_document(
            atlas={"base_url": atlas_url, "max_retries": 0},
            poll={"interval_seconds": 0.3, "max_requests_per_minute": None},
            server={"host": "127.0.0.1", "port": port},
            alerts={"unreachable_after_failures": 1},
            endpoints=[entry],
        ),
    )
    daemon = Process(
        ["run", "--config", str(config)],
        subprocess_env(**WARNINGS_ENV),
        program=("prlimit", f"--nofile={FLOOD_DESCRIPTOR_LIMIT}", *MONITOR_PROGRAM),
    )
    try:
        daemon.wait_for_line(is_event("poll_cycle_finished"))
        flood = []
        try:
            for number in range(300):
                connection = socket.create_connection(("127.0.0.1", port), timeout=10)
                if number % 2:
                    connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: monitor\r\n")
                flood.append(connection)
            health = http_get(f"http://127.0.0.1:{port}/healthz")
            cycles = [
                json.loads(daemon.wait_for_line(is_event("poll_cycle_finished"))) for _ in range(3)
            ]
        finally:
            for connection in flood:
                connection.close()
        exit_code = daemon.stop(signal.SIGTERM)
    finally:
        daemon.kill()
    lines = daemon.all_output()
    text = "\n".join(lines)
    assert exit_code == 0, text[-2000:]
    assert health[0] == 200
    assert [cycle["up"] for cycle in cycles] == [1, 1, 1]
    assert not any(is_event("alert")(line) for line in lines)
    assert "out of system resource" not in text
    assert sum(is_event("listener_out_of_resources")(line) for line in lines) <= 1
    assert any(is_event("listener_connection_cap_reached")(line) for line in lines)
