"""Fault injection over real sockets: the simulator on 127.0.0.1 misbehaves in each way the
network and Atlas can, and the daemon must keep serving /metrics, keep the last status
Atlas gave, retry within ``atlas.max_retries``, alert, and recover without a restart.

Per-cycle numbers are exact whatever the timing: they are noted when a cycle writes its
last log line (``poll_cycle_finished``), after every request of that cycle has reached the
simulator and before the next cycle can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from structlog.typing import EventDict

from monitor.atlas import pacing as pacing_module
from monitor.atlas.http import MAX_BODY_BYTES
from monitor.atlas.pacing import MAX_RETRY_AFTER_SECONDS
from monitor.config import Settings
from monitor.lifecycle import serve_app, serve_on_stack
from monitor.polling.poller import Monitor
from monitor.server import MONITOR, create_app
from monitor.simulator import DROPPED, Fault, Scenario, Simulator, SimulatorStats
from tests.helpers import (
    GROUP_ID,
    PRIVATE_KEY,
    PUBLIC_KEY,
    StartSimulator,
    alerts_in,
    endpoint_entry,
    endpoint_id,
    events_in,
    ids_of,
    monitoring,
    settings_for,
    simulated,
    unused_port,
)

OTHER_GROUP = "6a1f3c9e2b7d4f0a8c5e1d3b"
HEALTHY_A = endpoint_entry(interface_endpoint_id=endpoint_id(1), name="healthy-a")
HEALTHY_B = endpoint_entry(interface_endpoint_id=endpoint_id(2), name="healthy-b")
# In a project of its own, so the pause its 429s earn holds back nobody else.
FAULTY = endpoint_entry(group_id=OTHER_GROUP, interface_endpoint_id=endpoint_id(3), name="faulty")

INTERVAL = 0.1
MAX_RETRIES = 2
UNREACHABLE_AFTER = 2
FAILING_CYCLES = 3
"""Long enough that the alert fires a cycle before the fault ends, which leaves scrapes
taken during the fault at least two intervals before the recovery."""
WAIT_SECONDS = 15
"""Bound on any one wait; the whole file takes a fraction of it."""
CYCLE_END = frozenset({"poll_cycle_finished", "poll_cycle_overran"})

K = TypeVar("K")


# /metrics, parsed


@dataclass(frozen=True)
class Series:
    """One endpoint's series on /metrics."""

    up: float | None
    status: str | None
    """The status whose series is 1; None when there are no status series."""
    status_since: float | None
    last_success: float | None
    firing: frozenset[str]


@dataclass(frozen=True)
class Metrics:
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(
            {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        )

    def _of(self, name: str, labels: Mapping[str, str]) -> list[tuple[dict[str, str], float]]:
        wanted = frozenset(labels.items())
        return [
            (dict(sample_labels), value)
            for (sample_name, sample_labels), value in self.samples.items()
            if sample_name == name and wanted <= sample_labels
        ]

    def _one(self, name: str, labels: Mapping[str, str]) -> float | None:
        found = self._of(name, labels)
        assert len(found) <= 1, found
        return found[0][1] if found else None

    def endpoint(self, entry: Mapping[str, Any]) -> Series:
        ids = ids_of(entry)
        statuses = self._of("atlas_interface_endpoint_status", ids)
        current = [labels["status"] for labels, value in statuses if value == 1]
        # A state set: all seven series or none, exactly one of them 1.
        assert not statuses or (len(statuses) == 7 and len(current) == 1), statuses
        firing = self._of("atlas_interface_endpoint_alert_firing", ids)
        return Series(
            up=self._one("atlas_interface_endpoint_up", ids),
            status=current[0] if current else None,
            status_since=self._one("atlas_interface_endpoint_status_since_timestamp_seconds", ids),
            last_success=self._one("atlas_interface_endpoint_last_success_timestamp_seconds", ids),
            firing=frozenset(labels["alert"] for labels, value in firing if value == 1),
        )

    def requests(self) -> Counter[str]:
        """``atlas_monitor_api_requests_total`` of GETs, by code."""
        return Counter(
            {
                labels["code"]: int(value)
                for labels, value in self._of("atlas_monitor_api_requests_total", {"method": "GET"})
            }
        )


def healthy(series: Series, status: str = "AVAILABLE") -> bool:
    return (series.up, series.status, series.firing) == (1, status, frozenset())


Scrape = Callable[[str], Awaitable[Metrics]]


@pytest.fixture
async def scrape() -> AsyncIterator[Scrape]:
    """GET /metrics over HTTP; it must answer 200 whatever Atlas is doing."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def get(url: str) -> Metrics:
            async with session.get(f"{url}/metrics") as response:
                assert response.status == 200
                return Metrics.parse(await response.text())

        yield get


# Cycle records


@dataclass(frozen=True)
class CycleEnd:
    """What the simulator had been asked, and what /metrics showed, as a cycle ended."""

    gets: Counter[str]
    """GETs that reached the simulator's handlers (past Digest auth), by endpoint id."""
    answered: Counter[int]
    """The simulator's answers to GETs that went out, by HTTP status."""
    metrics: Metrics


@dataclass
class CycleRecorder:
    """A structlog processor for ``capture_logs(processors=[...])``: notes a ``CycleEnd`` at
    each cycle's last log line and stamps every line with ``time.monotonic()``."""

    simulator: Callable[[], Simulator | None]
    """The simulator serving now, if any."""
    registry: CollectorRegistry | None = None
    cycles: list[CycleEnd] = field(default_factory=list)

    def __call__(self, logger: object, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["monotonic"] = time.monotonic()
        if event_dict["event"] in CYCLE_END:
            assert self.registry is not None, "the daemon's registry must be known first"
            simulator = self.simulator()
            stats = simulator.stats if simulator is not None else SimulatorStats()
            self.cycles.append(
                CycleEnd(
                    gets=Counter(
                        {
                            ident: n
                            for (method, ident), n in stats.by_endpoint.items()
                            if method == "GET"
                        }
                    ),
                    answered=Counter(
                        {
                            status: n
                            for (method, status), n in stats.requests.items()
                            if method == "GET" and status != DROPPED
                        }
                    ),
                    metrics=Metrics.parse(generate_latest(self.registry).decode()),
                )
            )
        return event_dict


def increments(totals: Iterable[Counter[K]]) -> list[Counter[K]]:
    """Per-cycle increments of cumulative counts."""
    steps = []
    previous: Counter[K] = Counter()
    for total in totals:
        steps.append(total - previous)
        previous = total
    return steps


def by_cycle(logs: Sequence[EventDict]) -> list[list[EventDict]]:
    """The log lines of each completed cycle, each list ending with the cycle's last line."""
    cycles: list[list[EventDict]] = []
    current: list[EventDict] = []
    for line in logs:
        current.append(line)
        if line["event"] in CYCLE_END:
            cycles.append(current)
            current = []
    return cycles


def only(lines: Iterable[EventDict], event: str, entry: Mapping[str, Any]) -> list[EventDict]:
    return [line for line in events_in(lines, event) if line.get("name") == entry["name"]]


# Daemons and simulators


@dataclass
class Daemon:
    monitor: Monitor
    url: str

    async def cycles(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            await self.monitor.wait_for_cycles(count)


class AtlasHost:
    """One simulator at a time on a fixed 127.0.0.1 port, to stop and start again."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{unused_port()}"
        self.simulator: Simulator | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, scenario: Scenario, *, private_key: str = PRIVATE_KEY) -> Simulator:
        assert self._runner is None
        simulator = Simulator(scenario, public_key=PUBLIC_KEY, private_key=private_key)
        port = int(self.url.rpartition(":")[2])
        self._runner = await serve_app(simulator.app, "127.0.0.1", port)
        self.simulator = simulator
        return simulator

    async def stop(self) -> None:
        runner, self._runner, self.simulator = self._runner, None, None
        if runner is not None:
            await runner.cleanup()


@pytest.fixture
async def atlas_host() -> AsyncIterator[AtlasHost]:
    host = AtlasHost()
    try:
        yield host
    finally:
        await host.stop()


StartDaemon = Callable[[Settings, CycleRecorder], Awaitable[Daemon]]


@pytest.fixture
async def start_daemon(
    start_simulator: StartSimulator, atlas_host: AtlasHost
) -> AsyncIterator[StartDaemon]:
    """conftest's ``start_daemon`` (the real app, scheduler and all, on a free port), except
    that the recorder learns the daemon's registry before the first cycle can end. It stops
    before the simulators, which it depends on."""
    async with contextlib.AsyncExitStack() as served:

        async def start(settings: Settings, recorder: CycleRecorder) -> Daemon:
            app = create_app(settings)
            recorder.registry = app[MONITOR].metrics.registry
            return Daemon(app[MONITOR], await serve_on_stack(served, app, "127.0.0.1", 0))

        yield start


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-off starts at 0.5 s with random jitter, too slow for a dozen failing cycles per
    test; Retry-After, which is what the tests about waiting look at, still sets the floor."""
    monkeypatch.setattr(pacing_module, "BACKOFF_BASE_SECONDS", 0.01)


def daemon_settings(base_url: str, endpoints: list[dict[str, Any]], **atlas: Any) -> Settings:
    return settings_for(
        base_url,
        endpoints=endpoints,
        atlas={"timeout_seconds": 5, "max_retries": MAX_RETRIES, **atlas},
        poll={"interval_seconds": INTERVAL},
        alerts={"unreachable_after_failures": UNREACHABLE_AFTER},
    )


def answer_body(entry: Mapping[str, Any], status: str = "AVAILABLE") -> str:
    return json.dumps(
        {
            "interfaceEndpointId": entry["interface_endpoint_id"],
            "connectionStatus": status,
            "errorMessage": None,
            "deleteRequested": False,
        }
    )


# One endpoint faulted, the others healthy


@dataclass(frozen=True)
class Case:
    fault: dict[str, Any]
    """The Fault's fields, without ``times``."""
    retried: bool
    """Transient, so each poll makes 1 + max_retries attempts; else exactly one."""
    cause: str
    """In ``endpoint_poll_failed``: how the client classified it."""
    code: str
    """``atlas_monitor_api_requests_total``'s code for each faulted exchange."""
    timeout_seconds: float = 5


CASES = {
    "429 with Retry-After": Case(
        {"status": 429, "retry_after": 0}, True, "429 RATE_LIMITED", "429"
    ),
    "429 without Retry-After": Case({"status": 429}, True, "429 RATE_LIMITED", "429"),
    "500": Case({"status": 500}, True, "500 UNEXPECTED_ERROR", "500"),
    "502": Case({"status": 502}, True, "502 UNEXPECTED_ERROR", "502"),
    "503": Case({"status": 503}, True, "503 UNEXPECTED_ERROR", "503"),
    "timeout": Case(
        {"latency_seconds": 0.6}, True, "no answer within 0.3 s", "error", timeout_seconds=0.3
    ),
    "reset mid-body": Case(
        {"truncate_body": True}, True, "connection failed: ClientPayloadError", "200"
    ),
    "malformed JSON": Case({"body": '{"interfaceEndpointId": '}, False, "malformed JSON", "200"),
    "a JSON list": Case(
        {"body": f"[{answer_body(FAULTY)}]"}, False, "expected a JSON object, got list", "200"
    ),
    "no connectionStatus": Case(
        {"body": json.dumps({"interfaceEndpointId": FAULTY["interface_endpoint_id"]})},
        False,
        "connectionStatus is missing",
        "200",
    ),
    "text/html": Case(
        {"body": "<html><body>502 Bad Gateway</body></html>", "content_type": "text/html"},
        False,
        "expected JSON, got content type 'text/html'",
        "200",
    ),
    # A valid answer, padded past the cap: read whole, it would count as up.
    "oversized body": Case(
        {"body": answer_body(FAULTY) + " " * MAX_BODY_BYTES},
        False,
        f"answer body larger than {MAX_BODY_BYTES} bytes",
        "200",
    ),
    "401": Case({"status": 401}, False, "401 UNAUTHORIZED", "401"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_faulty_endpoint_goes_down_alone_and_recovers(
    case: Case, start_simulator: StartSimulator, start_daemon: StartDaemon, scrape: Scrape
) -> None:
    per_poll = 1 + MAX_RETRIES if case.retried else 1
    faults = [
        Fault(body=answer_body(FAULTY, "AVAILABLE"), times=1),  # cycle 1: an answer
        Fault(**case.fault, times=FAILING_CYCLES * per_poll),  # cycles 2 to 4: the fault
    ]  # from cycle 5: Atlas' own state, PENDING
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(HEALTHY_A),
                simulated(HEALTHY_B),
                simulated(FAULTY, status="PENDING", faults=faults),
            ]
        )
    )
    settings = daemon_settings(
        url, [HEALTHY_A, HEALTHY_B, FAULTY], timeout_seconds=case.timeout_seconds
    )
    recorder = CycleRecorder(lambda: simulator)
    recovered_in = FAILING_CYCLES + 2
    scraped = {}
    with capture_logs(processors=[recorder]) as logs:
        daemon = await start_daemon(settings, recorder)
        for count in range(1, recovered_in + 1):
            await daemon.cycles(count)
            scraped[count] = await scrape(daemon.url)

    cycles = recorder.cycles[:recovered_in]
    gets = increments(end.gets for end in cycles)
    # Requests: 1 + max_retries per failed poll when transient, else one; never more.
    assert [step[FAULTY["interface_endpoint_id"]] for step in gets] == [
        1,
        *[per_poll] * FAILING_CYCLES,
        1,
    ]
    for entry in (HEALTHY_A, HEALTHY_B):
        assert [step[entry["interface_endpoint_id"]] for step in gets] == [1] * recovered_in
    failing = Counter({"200": 2}) + Counter({case.code: per_poll})
    assert increments(end.metrics.requests() for end in cycles) == [
        Counter({"401": 1, "200": 3}),  # the Digest challenge, once
        *[failing] * FAILING_CYCLES,
        Counter({"200": 3}),
    ]
    for end in cycles:  # the daemon counts what the simulator answered, code by code
        answered = {str(status): n for status, n in end.answered.items()}
        assert {code: n for code, n in end.metrics.requests().items() if code != "error"} == (
            answered
        )

    # State after each cycle: the last known status is kept, with its age.
    first, *during, after = [end.metrics.endpoint(FAULTY) for end in cycles]
    assert healthy(first)
    for failures, series in enumerate(during, start=1):
        assert (series.up, series.status) == (0, "AVAILABLE")
        assert (series.status_since, series.last_success) == (
            first.status_since,
            first.last_success,
        )
        firing = {"unreachable"} if failures >= UNREACHABLE_AFTER else set()
        assert series.firing == firing
    assert healthy(after, "PENDING")
    assert after.status_since is not None
    assert first.status_since is not None
    assert after.status_since > first.status_since
    for end in cycles:
        assert healthy(end.metrics.endpoint(HEALTHY_A))
        assert healthy(end.metrics.endpoint(HEALTHY_B))

    # The same over HTTP, during the fault and after it.
    during_fault = scraped[2].endpoint(FAULTY)
    assert (during_fault.up, during_fault.status) == (0, "AVAILABLE")
    assert (during_fault.status_since, during_fault.last_success) == (
        first.status_since,
        first.last_success,
    )
    assert healthy(scraped[2].endpoint(HEALTHY_A))
    assert healthy(scraped[recovered_in].endpoint(FAULTY), "PENDING")
    assert healthy(scraped[recovered_in].endpoint(HEALTHY_B))

    # Logs: the failure, the alert once and its resolution once, the recovery.
    lines = by_cycle(logs)[:recovered_in]
    assert [alerts_in(cycle) for cycle in lines] == [
        [],
        [],
        [("faulty", "unreachable", "firing")],
        [],
        [("faulty", "unreachable", "resolved")],
    ]
    (failed,) = only(lines[1], "endpoint_poll_failed", FAULTY)
    assert failed["log_level"] == "warning"
    assert case.cause in failed["cause"]
    retries = [len(events_in(cycle, "atlas_request_retry")) for cycle in lines]
    assert retries == [0, *[per_poll - 1] * FAILING_CYCLES, 0]
    (recovered,) = only(lines[-1], "endpoint_poll_recovered", FAULTY)
    assert recovered["failed_polls"] == FAILING_CYCLES
    assert [line["name"] for line in events_in(logs, "alert")] == ["faulty", "faulty"]


# The whole API


async def test_connection_refused_until_atlas_comes_up(
    atlas_host: AtlasHost, start_daemon: StartDaemon, scrape: Scrape
) -> None:
    endpoints = [HEALTHY_A, HEALTHY_B]
    recorder = CycleRecorder(lambda: atlas_host.simulator)
    with capture_logs(processors=[recorder]) as logs:
        daemon = await start_daemon(daemon_settings(atlas_host.url, endpoints), recorder)
        await daemon.cycles(UNREACHABLE_AFTER + 1)
        refused = await scrape(daemon.url)
        refused_cycles = daemon.monitor.cycles_completed
        await atlas_host.start(
            Scenario(endpoints=[simulated(HEALTHY_A), simulated(HEALTHY_B, status="PENDING")])
        )
        # The first cycle after may have begun before the simulator listened.
        served_from = daemon.monitor.cycles_completed + 2
        await daemon.cycles(served_from + 1)
        back = await scrape(daemon.url)

    requests = increments(end.metrics.requests() for end in recorder.cycles)
    assert requests[:refused_cycles] == [Counter({"error": 2 * (1 + MAX_RETRIES)})] * (
        refused_cycles
    )
    assert requests[served_from] == Counter({"200": 2})
    gets = increments(end.gets for end in recorder.cycles[served_from - 1 : served_from + 1])
    assert gets[1] == Counter({entry["interface_endpoint_id"]: 1 for entry in endpoints})
    for entry in endpoints:
        series = refused.endpoint(entry)
        assert series == Series(0, None, None, None, frozenset({"unreachable"}))
    assert healthy(back.endpoint(HEALTHY_A))
    assert healthy(back.endpoint(HEALTHY_B), "PENDING")

    lines = by_cycle(logs)
    for entry in endpoints:
        assert [alert for alert in alerts_in(logs) if alert[0] == entry["name"]] == [
            (entry["name"], "unreachable", "firing"),
            (entry["name"], "unreachable", "resolved"),
        ]
        (fired,) = [
            number
            for number, cycle in enumerate(lines, start=1)
            if (entry["name"], "unreachable", "firing") in alerts_in(cycle)
        ]
        assert fired == UNREACHABLE_AFTER
        (failed,) = only(logs, "endpoint_poll_failed", entry)[:1]
        assert failed["cause"].startswith("cannot connect")


OUTAGES = {
    # The simulator stopped: nothing listens on its port.
    "connections refused": (None, Counter({"error": 2 * (1 + MAX_RETRIES)}), "cannot connect"),
    # The simulator back with a key the daemon does not have: 401 after the Digest retry,
    # which is aiohttp's one resend per request; an auth error is not retried.
    "a wrong key": (
        "rotated-private-key",
        Counter({"401": 2 * 2}),
        "401: You are not authorized for this resource.",
    ),
}


@pytest.mark.parametrize(("private_key", "per_cycle", "cause"), OUTAGES.values(), ids=OUTAGES)
async def test_the_whole_api_fails_for_several_cycles_then_comes_back(
    private_key: str | None,
    per_cycle: Counter[str],
    cause: str,
    atlas_host: AtlasHost,
    start_daemon: StartDaemon,
    scrape: Scrape,
) -> None:
    rejected = endpoint_entry(interface_endpoint_id=endpoint_id(2), name="rejected")
    endpoints = [HEALTHY_A, rejected]
    await atlas_host.start(
        Scenario(endpoints=[simulated(HEALTHY_A), simulated(rejected, status="REJECTED")])
    )
    recorder = CycleRecorder(lambda: atlas_host.simulator)
    with capture_logs(processors=[recorder]) as logs:
        daemon = await start_daemon(daemon_settings(atlas_host.url, endpoints), recorder)
        await daemon.cycles(1)
        await atlas_host.stop()
        if private_key is not None:
            await atlas_host.start(
                Scenario(endpoints=[simulated(HEALTHY_A), simulated(rejected)]),
                private_key=private_key,
            )
        # The cycle after the switch may have begun before it; the ones after it cannot.
        failing_from = daemon.monitor.cycles_completed + 2
        await daemon.cycles(failing_from + UNREACHABLE_AFTER - 1)
        down = await scrape(daemon.url)
        failing_until = daemon.monitor.cycles_completed
        await atlas_host.stop()
        await atlas_host.start(Scenario(endpoints=[simulated(HEALTHY_A), simulated(rejected)]))
        served_from = daemon.monitor.cycles_completed + 2
        await daemon.cycles(served_from + 1)
        back = await scrape(daemon.url)

    first = recorder.cycles[0].metrics
    assert healthy(first.endpoint(HEALTHY_A))
    assert first.endpoint(rejected).status == "REJECTED"
    requests = increments(end.metrics.requests() for end in recorder.cycles)
    assert requests[failing_from - 1 : failing_until] == [per_cycle] * (
        failing_until - failing_from + 1
    )
    assert requests[served_from] == Counter({"200": 2})
    lines = by_cycle(logs)
    retried = any(
        events_in(cycle, "atlas_request_retry") for cycle in lines[failing_from - 1 : failing_until]
    )
    assert retried == (private_key is None)

    for entry, status, firing in (
        (HEALTHY_A, "AVAILABLE", {"unreachable"}),
        (rejected, "REJECTED", {"rejected", "unreachable"}),
    ):
        before, now = first.endpoint(entry), down.endpoint(entry)
        assert (now.up, now.status, now.firing) == (0, status, firing)
        assert (now.status_since, now.last_success) == (before.status_since, before.last_success)
        assert healthy(back.endpoint(entry))
        (failed,) = only(logs, "endpoint_poll_failed", entry)[:1]
        assert failed["cause"].startswith(cause)
        # The alert fires with the threshold's failure, counted from the first one.
        failed_in = [number for number, cycle in enumerate(lines) if failed in cycle]
        fired_in = [
            number
            for number, cycle in enumerate(lines)
            if (entry["name"], "unreachable", "firing") in alerts_in(cycle)
        ]
        assert fired_in == [failed_in[0] + UNREACHABLE_AFTER - 1]
    assert sorted(alerts_in(logs)) == sorted(
        [
            ("rejected", "rejected", "firing"),
            ("healthy-a", "unreachable", "firing"),
            ("rejected", "unreachable", "firing"),
            ("healthy-a", "unreachable", "resolved"),
            ("rejected", "unreachable", "resolved"),
            ("rejected", "rejected", "resolved"),
        ]
    )
    assert alerts_in(lines[-1]) == []


# The per-project pause after a 429


SAME_PROJECT = [
    endpoint_entry(interface_endpoint_id=endpoint_id(number), name=f"same-{number}")
    for number in (11, 12, 13)
]
OTHER_PROJECT = endpoint_entry(
    group_id=OTHER_GROUP, interface_endpoint_id=endpoint_id(14), name="other-project"
)


async def test_a_429_holds_the_project_back_until_retry_after_but_not_other_projects(
    start_simulator: StartSimulator, start_daemon: StartDaemon, scrape: Scrape
) -> None:
    """The daemon's first cycle: its first request runs alone and answers 429 Retry-After: 1,
    and the requests that were waiting for it go out at once only for the other project."""
    throttled, *siblings = SAME_PROJECT
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(throttled, faults=[Fault(status=429, retry_after=1, times=1)]),
                *(simulated(entry) for entry in siblings),
                simulated(OTHER_PROJECT),
            ]
        )
    )
    endpoints = [*SAME_PROJECT, OTHER_PROJECT]
    recorder = CycleRecorder(lambda: simulator)
    with capture_logs(processors=[recorder]) as logs:
        daemon = await start_daemon(daemon_settings(url, endpoints), recorder)
        await daemon.cycles(1)
        metrics = await scrape(daemon.url)

    first_cycle = by_cycle(logs)[0]
    (pause,) = events_in(first_cycle, "atlas_project_throttled")
    assert (pause["group_id"], pause["pause_seconds"]) == (GROUP_ID, 1.0)
    arrived: dict[str, list[float]] = {}
    for line in events_in(first_cycle, "simulator_request"):
        if line["status"] != 401:
            ident = line["path"].rpartition("/")[2]
            arrived.setdefault(ident, []).append(line["monotonic"] - pause["monotonic"])
    # Answered at once: the 429 itself and the other project's endpoint.
    throttled_at, retried_at = arrived[throttled["interface_endpoint_id"]]
    assert throttled_at <= 0
    (other_at,) = arrived[OTHER_PROJECT["interface_endpoint_id"]]
    assert other_at < 0.5
    # Held for the pause: the throttled endpoint's own retry and its project's other requests.
    assert retried_at >= 0.95
    for entry in siblings:
        (sibling_at,) = arrived[entry["interface_endpoint_id"]]
        assert sibling_at >= 0.95

    assert recorder.cycles[0].gets == Counter(
        {entry["interface_endpoint_id"]: 1 for entry in endpoints}
        | {throttled["interface_endpoint_id"]: 2}
    )
    assert recorder.cycles[0].metrics.requests() == Counter({"401": 1, "429": 1, "200": 4})
    assert all(healthy(metrics.endpoint(entry)) for entry in endpoints)
    assert alerts_in(logs) == []


@dataclass
class MonotonicShift:
    """Runs ``monitor.atlas``'s monotonic clock ahead, so a project pause can end without the
    test waiting for it (the event loop's own clock is left alone)."""

    seconds: float = 0.0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        shifted = SimpleNamespace(
            monotonic=lambda: time.monotonic() + self.seconds,
            time=time.time,
            perf_counter=time.perf_counter,
        )
        monkeypatch.setattr(pacing_module, "time", shifted)


async def test_a_retry_after_beyond_the_cap_fails_the_project_fast_until_it_ends(
    start_simulator: StartSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    retry_after = int(MAX_RETRY_AFTER_SECONDS) + 60
    shift = MonotonicShift()
    shift.install(monkeypatch)
    throttled, sibling, _ = SAME_PROJECT
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(throttled, faults=[Fault(status=429, retry_after=retry_after, times=1)]),
                simulated(sibling),
                simulated(OTHER_PROJECT),
            ]
        )
    )
    endpoints = [throttled, sibling, OTHER_PROJECT]
    settings = daemon_settings(url, endpoints)
    gets: list[Counter[str]] = []
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            for jump in (0, 0, retry_after):
                shift.seconds += jump
                async with asyncio.timeout(WAIT_SECONDS):
                    await monitor.run_cycle(client)
                gets.append(
                    Counter({ident: n for (_, ident), n in simulator.stats.by_endpoint.items()})
                )
            registry_requests = Metrics.parse(
                generate_latest(monitor.metrics.registry).decode()
            ).requests()

    per_cycle = increments(gets)
    assert [step[throttled["interface_endpoint_id"]] for step in per_cycle] == [1, 0, 1]
    assert [step[sibling["interface_endpoint_id"]] for step in per_cycle] == [0, 0, 1]
    assert [step[OTHER_PROJECT["interface_endpoint_id"]] for step in per_cycle] == [1, 1, 1]
    assert registry_requests == Counter({"401": 1, "429": 1, "200": 5})
    assert events_in(logs, "atlas_request_retry") == []
    (failed,) = only(logs, "endpoint_poll_failed", sibling)[:1]
    assert failed["cause"].startswith(f"429: not sent: Atlas throttles project {GROUP_ID}")
    lines = by_cycle(logs)
    assert [sorted(alerts_in(cycle)) for cycle in lines] == [
        [],
        [("same-11", "unreachable", "firing"), ("same-12", "unreachable", "firing")],
        [("same-11", "unreachable", "resolved"), ("same-12", "unreachable", "resolved")],
    ]
