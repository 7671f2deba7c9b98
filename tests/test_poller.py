"""Polling fan-out: bounded, ordered, and one bad endpoint never spoils the rest."""

from __future__ import annotations

import asyncio
import bisect
import errno
import gzip
import itertools
import math
import operator
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from pydantic import SecretStr
from structlog.testing import capture_logs
from yarl import URL

from monitor.atlas import (
    V2_MEDIA_TYPE,
    ApiKey,
    ApiVersion,
    AtlasClient,
    AtlasServerError,
    EndpointRef,
    EndpointService,
    InterfaceEndpoint,
)
from monitor.config import EndpointConfig, Settings
from monitor.exposition import EndpointExposition, Exposition
from monitor.polling.alerts import AlertName
from monitor.polling.poller import Monitor, PollScheduler, poll_endpoints
from monitor.providers import CloudProvider, ConnectionStatus
from monitor.simulator import Fault, Scenario, ScenarioEndpoint
from tests.helpers import (
    GROUP_ID,
    PRIVATE_KEY,
    PRIVATE_LINK_ID,
    PUBLIC_KEY,
    FakeClock,
    RunVirtually,
    StartSimulator,
    alerts_in,
    endpoint_entry,
    endpoint_id,
    events_in,
    ids_of,
    monitoring,
    settings_for,
    simulated,
)

ALERT_FIRING = "atlas_interface_endpoint_alert_firing"


def endpoints(count: int) -> list[EndpointConfig]:
    return [
        EndpointConfig(
            group_id=GROUP_ID,
            private_link_id=PRIVATE_LINK_ID,
            interface_endpoint_id=f"vpce-{index:08x}",
        )
        for index in range(count)
    ]


class GatedClient:
    """Holds every request until released, recording how many were in flight at once."""

    def __init__(self, failing: set[str] = frozenset(), crashing: set[str] = frozenset()) -> None:
        self.in_flight = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.started = asyncio.Condition()
        self.failing = failing
        self.crashing = crashing

    async def get_interface_endpoint(self, ref: EndpointRef) -> InterfaceEndpoint:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        async with self.started:
            self.started.notify_all()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        endpoint_id = ref.interface_endpoint_id
        if endpoint_id in self.crashing:
            raise KeyError("a bug")
        if endpoint_id in self.failing:
            raise AtlasServerError(
                method="GET",
                path=ApiVersion.V1.endpoint_path(ref),
                status=500,
                error_code="UNEXPECTED_ERROR",
                detail=None,
            )
        return InterfaceEndpoint(endpoint_id, ConnectionStatus.AVAILABLE, "AVAILABLE", None, False)


async def test_never_more_than_concurrency_requests_in_flight() -> None:
    client = GatedClient()
    polling = asyncio.create_task(poll_endpoints(client, endpoints(20), concurrency=4))
    async with client.started:
        await asyncio.wait_for(client.started.wait_for(lambda: client.in_flight == 4), 5)
    assert client.peak == 4
    client.release.set()
    results = await asyncio.wait_for(polling, 5)
    assert len(results) == 20
    assert client.peak == 4


async def test_results_keep_config_order_and_failures_stay_local() -> None:
    configured = endpoints(6)
    client = GatedClient(failing={"vpce-00000001"}, crashing={"vpce-00000004"})
    client.release.set()
    with capture_logs() as logs:
        results = await asyncio.wait_for(poll_endpoints(client, configured, concurrency=3), 5)
    assert [result.endpoint for result in results] == configured
    assert [result.up for result in results] == [True, False, True, True, False, True]
    assert isinstance(results[1].error, AtlasServerError)
    assert isinstance(results[4].error, KeyError)
    assert [entry["event"] for entry in logs] == ["poll_failed_unexpectedly"]


async def test_no_endpoints_means_no_work() -> None:
    assert await poll_endpoints(GatedClient(), [], concurrency=8) == []


async def test_a_concurrent_first_cycle_pays_the_digest_challenge_once(
    start_simulator: StartSimulator,
) -> None:
    configured = endpoints(12)
    scenario = Scenario(
        endpoints=[
            ScenarioEndpoint(
                **endpoint.model_dump(
                    include={"group_id", "private_link_id", "interface_endpoint_id"}
                )
            )
            for endpoint in configured
        ]
    )
    simulator, url = await start_simulator(scenario)
    client = AtlasClient(
        base_url=url,
        login=ApiKey(PUBLIC_KEY, SecretStr(PRIVATE_KEY)),
        timeout_seconds=5,
        max_retries=0,
        max_connections=4,
    )
    async with client:
        for _ in range(2):
            results = await asyncio.wait_for(poll_endpoints(client, configured, concurrency=4), 10)
            assert all(result.up for result in results)
    assert simulator.stats.challenges == 1
    assert simulator.stats.total() == 1 + 2 * 12


HEALTHY = endpoint_entry(interface_endpoint_id=endpoint_id(1), name="healthy")
REJECTED = endpoint_entry(interface_endpoint_id=endpoint_id(2), name="rejected")
BROKEN = endpoint_entry(interface_endpoint_id=endpoint_id(3), name="broken")


async def test_each_broken_endpoint_alerts_once_across_cycles(
    start_simulator: StartSimulator,
) -> None:
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(HEALTHY),
                simulated(REJECTED, status="REJECTED"),
                simulated(BROKEN, error_message="no subnet in use1-az3"),
            ]
        )
    )
    settings = settings_for(url, endpoints=[HEALTHY, REJECTED, BROKEN])
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            for _ in range(3):
                await monitor.run_cycle(client)
    assert alerts_in(logs) == [
        ("rejected", "rejected", "firing"),
        ("broken", "error_message", "firing"),
    ]
    (error_alert,) = [line for line in logs if line.get("alert") == "error_message"]
    assert error_alert["error_message"] == "no subnet in use1-az3"
    assert error_alert["connection_status"] == "AVAILABLE"
    assert error_alert["previous_status"] is None
    assert error_alert["log_level"] == "error"
    registry = monitor.metrics.registry
    assert registry.get_sample_value("atlas_monitor_alerts_total", {"alert": "rejected"}) == 1
    assert registry.get_sample_value("atlas_monitor_alerts_total", {"alert": "error_message"}) == 1
    assert registry.get_sample_value("atlas_monitor_poll_cycle_duration_seconds_count") == 3
    assert registry.get_sample_value("atlas_monitor_poll_interval_seconds") == (
        settings.config.poll.interval_seconds
    )
    assert simulator.stats.total() == 1 + 3 * 3
    assert monitor.cycles_completed == 3
    assert len(events_in(logs, "poll_cycle_finished")) == 3
    assert len(events_in(logs, "endpoint_status_changed")) == 3


async def test_a_fixed_endpoint_resolves_its_alert_once(start_simulator: StartSimulator) -> None:
    simulator, url = await start_simulator(
        Scenario(endpoints=[simulated(REJECTED, status="REJECTED")])
    )
    firing_labels = {**ids_of(REJECTED), "alert": "rejected"}
    async with monitoring(settings_for(url, endpoints=[REJECTED])) as (monitor, client):
        registry = monitor.metrics.registry
        await monitor.run_cycle(client)
        assert registry.get_sample_value(ALERT_FIRING, firing_labels) == 1
        simulator.set_endpoint(**ids_of(REJECTED), status="AVAILABLE")
        with capture_logs() as logs:
            await monitor.run_cycle(client)
            await monitor.run_cycle(client)
    assert registry.get_sample_value(ALERT_FIRING, firing_labels) == 0
    (resolved,) = events_in(logs, "alert")
    assert resolved["alert"] == "rejected"
    assert resolved["state"] == "resolved"
    assert resolved["log_level"] == "info"
    assert resolved["connection_status"] == "AVAILABLE"
    assert resolved["previous_status"] == "REJECTED"


async def test_unreachable_fires_after_consecutive_failures_and_keeps_the_last_status(
    start_simulator: StartSimulator,
) -> None:
    simulator, url = await start_simulator(
        Scenario(endpoints=[simulated(HEALTHY), simulated(REJECTED, status="REJECTED")])
    )
    settings = settings_for(
        url, endpoints=[HEALTHY, REJECTED], alerts={"unreachable_after_failures": 2}
    )
    async with monitoring(settings) as (monitor, client):
        await monitor.run_cycle(client)
        simulator.add_fault(**ids_of(REJECTED), fault=Fault(status=500, times=2))
        with capture_logs() as logs:
            await monitor.run_cycle(client)
            assert alerts_in(logs) == []
            await monitor.run_cycle(client)
            assert alerts_in(logs) == [("rejected", "unreachable", "firing")]
            state = monitor.state_of(EndpointConfig.model_validate(REJECTED))
            assert state is not None
            assert (state.up, state.status, state.consecutive_failures) == (
                False,
                ConnectionStatus.REJECTED,
                2,
            )
            assert set(state.firing) == {AlertName.REJECTED, AlertName.UNREACHABLE}
            await monitor.run_cycle(client)
    assert alerts_in(logs) == [
        ("rejected", "unreachable", "firing"),
        ("rejected", "unreachable", "resolved"),
    ]
    failed_warnings = [
        line["name"]
        for line in events_in(logs, "endpoint_poll_failed")
        if line["log_level"] == "warning"
    ]
    assert failed_warnings == ["rejected"]
    assert [line["name"] for line in events_in(logs, "endpoint_poll_recovered")] == ["rejected"]


async def test_stuck_fires_when_a_pending_status_outlasts_the_limit(
    start_simulator: StartSimulator,
) -> None:
    clock = FakeClock(5000.0)
    _, url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY, status="PENDING")]))
    settings = settings_for(url, endpoints=[HEALTHY], alerts={"stuck_after_seconds": 100})
    with capture_logs() as logs:
        async with monitoring(settings, clock=clock) as (monitor, client):
            await monitor.run_cycle(client)
            clock.now += 99
            await monitor.run_cycle(client)
            assert alerts_in(logs) == []
            clock.now += 1
            await monitor.run_cycle(client)
            await monitor.run_cycle(client)
    assert alerts_in(logs) == [("healthy", "stuck", "firing")]
    state = monitor.state_of(EndpointConfig.model_validate(HEALTHY))
    assert state is not None
    assert state.status_since == 5000.0
    last_cycle = monitor.metrics.registry.get_sample_value(
        "atlas_monitor_last_poll_cycle_timestamp_seconds"
    )
    assert last_cycle == 5100.0


async def test_an_unknown_status_is_kept_raw_and_logged_once(
    start_simulator: StartSimulator,
) -> None:
    _, url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY, status="MIGRATING")]))
    with capture_logs() as logs:
        async with monitoring(settings_for(url, endpoints=[HEALTHY])) as (monitor, client):
            await monitor.run_cycle(client)
            await monitor.run_cycle(client)
    (unknown,) = events_in(logs, "unknown_connection_status")
    assert unknown["raw_status"] == "MIGRATING"
    state = monitor.state_of(EndpointConfig.model_validate(HEALTHY))
    assert state is not None
    assert state.status is ConnectionStatus.UNKNOWN


async def test_a_slow_endpoint_does_not_hold_up_the_others(
    start_simulator: StartSimulator,
) -> None:
    slow = endpoint_entry(interface_endpoint_id=endpoint_id(9), name="slow")
    fast = [
        endpoint_entry(interface_endpoint_id=endpoint_id(number), name=f"fast-{number}")
        for number in range(4)
    ]
    _, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(slow, faults=[Fault(latency_seconds=0.5)]),
                *(simulated(entry) for entry in fast),
            ]
        )
    )
    # The slow one is second: the session's first exchange runs alone, by design.
    first, *others = fast
    settings = settings_for(url, endpoints=[first, slow, *others], poll={"concurrency": 2})
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            await monitor.run_cycle(client)
    seen = [line["name"] for line in events_in(logs, "endpoint_status_changed")]
    assert seen == ["fast-0", "fast-1", "fast-2", "fast-3", "slow"]


async def test_the_scheduler_runs_the_first_cycle_at_once_and_never_stacks_cycles(
    start_simulator: StartSimulator,
) -> None:
    _, url = await start_simulator(
        Scenario(endpoints=[simulated(HEALTHY, faults=[Fault(latency_seconds=0.3)])])
    )
    settings = settings_for(url, endpoints=[HEALTHY], poll={"interval_seconds": 0.1})
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            scheduler = PollScheduler(monitor, client)
            scheduler.start()
            try:
                await asyncio.wait_for(monitor.wait_for_cycles(2), 5)
            finally:
                await scheduler.stop()
    skipped = monitor.metrics.registry.get_sample_value("atlas_monitor_poll_cycles_skipped_total")
    assert skipped is not None
    assert skipped >= 1
    assert events_in(logs, "poll_cycle_skipped")
    assert len(events_in(logs, "poll_cycle_overran")) >= 2


async def test_stopping_cancels_the_cycle_in_flight(start_simulator: StartSimulator) -> None:
    entered = asyncio.Event()

    async def hang(seconds: float) -> None:
        entered.set()
        await asyncio.Event().wait()

    _, url = await start_simulator(
        Scenario(endpoints=[simulated(HEALTHY, faults=[Fault(latency_seconds=1)])]), sleep=hang
    )
    settings = settings_for(url, endpoints=[HEALTHY], poll={"interval_seconds": 3600})
    async with monitoring(settings) as (monitor, client):
        scheduler = PollScheduler(monitor, client)
        scheduler.start()
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.wait_for(scheduler.stop(), 6)
    assert monitor.cycles_completed == 0
    assert monitor.state_of(EndpointConfig.model_validate(HEALTHY)) is None


def served_endpoints(monitor: Monitor) -> bytes:
    """/metrics' endpoint families (self-metrics left out), after checking the gzipped body
    (CRC included) holds the same text."""
    served = monitor.metrics.render()
    assert gzip.decompress(served.gzip()) == b"".join(served.chunks())
    return b"".join(piece.raw() for piece in served.pieces[1:])


def rendered_afresh(monitor: Monitor) -> bytes:
    fresh = EndpointExposition()
    fresh.sync(monitor.snapshot())
    return b"".join(Exposition(fresh.pieces()).chunks())


async def test_the_monitor_reports_every_change_metrics_serves(
    start_simulator: StartSimulator,
) -> None:
    """/metrics re-renders only endpoints the Monitor reports: scraped during and between
    cycles and after reloads, with the background compression running as in the daemon, it
    serves what a render from scratch would."""
    _, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(HEALTHY),
                simulated(REJECTED, status="REJECTED"),
                simulated(BROKEN, error_message="no subnet in use1-az3"),
            ]
        )
    )
    ticks = itertools.count(1_700_000_000)
    settings = settings_for(url, endpoints=[HEALTHY, REJECTED, BROKEN])
    relabelled = {**HEALTHY, "labels": {"team": "payments"}}
    added = endpoint_entry(interface_endpoint_id=endpoint_id(4))
    reloads = [
        settings_for(url, endpoints=[relabelled, BROKEN, added]).config,
        settings.config,
    ]
    async with monitoring(settings, clock=lambda: float(next(ticks))) as (monitor, client):
        background = asyncio.create_task(monitor.metrics.keep_compressed(every=0.001))
        assert served_endpoints(monitor) == rendered_afresh(monitor)
        for reload in [*reloads, None]:
            for _ in range(2):
                cycle = asyncio.create_task(monitor.run_cycle(client))
                while not cycle.done():
                    assert served_endpoints(monitor) == rendered_afresh(monitor)
                    await asyncio.sleep(0.001)
                await cycle
                assert served_endpoints(monitor) == rendered_afresh(monitor)
            if reload is not None:
                monitor.reconfigure(reload)
                assert served_endpoints(monitor) == rendered_afresh(monitor)
        background.cancel()
        with pytest.raises(asyncio.CancelledError):
            await background


OTHER_GROUP_ID = "6a1f3c9e2b7d4f0a8c5e1d3b"


async def test_discovery_runs_every_n_cycles_and_at_once_after_a_reload_changes_it(
    start_simulator: StartSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = endpoint_entry(interface_endpoint_id=endpoint_id(1))
    second = endpoint_entry(group_id=OTHER_GROUP_ID, interface_endpoint_id=endpoint_id(2))
    _, url = await start_simulator(Scenario(endpoints=[simulated(first), simulated(second)]))

    def discovering(group_id: str) -> Settings:
        return settings_for(
            url,
            atlas={"api_version": "v2", "timeout_seconds": 5, "max_retries": 0},
            poll={"discover_every_cycles": 3},
            endpoints=[],
            discover=[{"group_id": group_id, "cloud_providers": ["AWS"]}],
        )

    listed: list[str] = []

    settings = discovering(GROUP_ID)
    async with monitoring(settings) as (monitor, client):
        list_endpoint_services = client.list_endpoint_services

        async def counting(group_id: str, provider: CloudProvider) -> list[EndpointService]:
            listed.append(group_id)
            return await list_endpoint_services(group_id, provider)

        monkeypatch.setattr(client, "list_endpoint_services", counting)
        for _ in range(4):
            await monitor.run_cycle(client)
        assert [endpoint.interface_endpoint_id for endpoint in monitor.endpoints] == [
            endpoint_id(1)
        ]
        assert listed == [GROUP_ID, GROUP_ID]  # cycles 1 and 4
        with capture_logs() as logs:
            monitor.reconfigure(discovering(OTHER_GROUP_ID).config)
            await monitor.run_cycle(client)

    assert listed == [GROUP_ID, GROUP_ID, OTHER_GROUP_ID]
    assert [endpoint.interface_endpoint_id for endpoint in monitor.endpoints] == [endpoint_id(2)]
    removed = events_in(logs, "endpoint_removed")
    assert [entry["interface_endpoint_id"] for entry in removed] == [endpoint_id(1)]
    assert [entry["interface_endpoint_id"] for entry in events_in(logs, "endpoint_discovered")] == [
        endpoint_id(2)
    ]


# Fair pacing across projects (issue 16), on virtual time: every duration below is exact.

LATENCY = 0.02
PER_MINUTE = 600
SPACING = 60 / PER_MINUTE
ENDPOINT_URLS = re.compile(r"^https://atlas\.test/api/atlas/v1\.0/groups/.*/interfaceEndpoints/")
V2_URLS = re.compile(r"^https://atlas\.test/api/atlas/v2/groups/.*/privateEndpoint/AWS/")


def project_id(number: int) -> str:
    return f"{number + 1:024x}"


@dataclass
class VirtualAtlas:
    """Atlas behind aioresponses on virtual time: every endpoint AVAILABLE after ``latency``
    seconds. It records when each project's requests started and how many were in flight,
    and can throttle a project by its answers' headers."""

    latency: float = LATENCY
    v2: bool = False
    """Answer Atlas v2 (AWS) routes: endpoint services and their endpoints."""
    throttled: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    """Project -> (status, headers) of its answers (429 with Retry-After, RateLimit-*)."""
    started: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    in_flight: int = 0
    peak: int = 0

    async def answer(self, url: URL, **kwargs: Any) -> CallbackResult:
        parts = url.path.split("/")  # .../groups/{group}/privateEndpoint/.../{endpoint}
        group_id, endpoint = parts[parts.index("groups") + 1], parts[-1]
        self.started[group_id].append(asyncio.get_running_loop().time())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        status, headers = self.throttled.get(group_id, (200, {}))
        if status == 429:
            del self.throttled[group_id]  # once, then the project is served again
            return CallbackResult(status=429, payload={"error": 429}, headers=headers)
        if not self.v2:
            body = {"interfaceEndpointId": endpoint, "connectionStatus": "AVAILABLE"}
            return CallbackResult(payload=body, headers=headers)
        if parts[-2] == "endpoint":
            body = {
                "cloudProvider": "AWS",
                "interfaceEndpointId": endpoint,
                "connectionStatus": "AVAILABLE",
            }
        else:
            body = {"cloudProvider": "AWS", "id": endpoint, "status": "AVAILABLE"}
        return CallbackResult(payload=body, headers=headers, content_type=V2_MEDIA_TYPE)

    def finished(self, group_id: str) -> float:
        """When the project's last answer arrived."""
        return max(self.started[group_id]) + self.latency


def fleet(sizes: list[int], order: str) -> list[dict[str, Any]]:
    """Endpoints of projects 0, 1, ... with ``sizes[n]`` endpoints each, listed project after
    project ("grouped"), round-robin ("interleaved") or the projects in reverse ("reversed")."""
    projects = [
        [
            endpoint_entry(
                group_id=project_id(number), interface_endpoint_id=endpoint_id(number * 1000 + i)
            )
            for i in range(size)
        ]
        for number, size in enumerate(sizes)
    ]
    if order == "interleaved":
        rounds = itertools.zip_longest(*projects)
        return [entry for entry in itertools.chain.from_iterable(rounds) if entry is not None]
    if order == "reversed":
        projects.reverse()
    return list(itertools.chain.from_iterable(projects))


async def timed_cycle(entries: list[dict[str, Any]], concurrency: int, **atlas: Any) -> float:
    """One cycle of a Monitor over ``entries``, paced at PER_MINUTE; its virtual duration."""
    settings = settings_for(
        "https://atlas.test",
        endpoints=entries,
        poll={"concurrency": concurrency, "max_requests_per_minute": PER_MINUTE},
        atlas={"timeout_seconds": 30, "max_retries": 2, **atlas},
    )
    loop = asyncio.get_running_loop()
    async with monitoring(settings) as (monitor, client):
        started = loop.time()
        await monitor.run_cycle(client)
        return loop.time() - started


def paced_time(endpoints: int) -> float:
    """What pacing alone makes a project of ``endpoints`` take: its last request is due
    (n - 1) spacings after its first; the latency of that one and of the session's first
    exchange (which runs alone, for the Digest challenge) come on top."""
    return (endpoints - 1) * SPACING + 2 * LATENCY


def cycle_bound(endpoints: int) -> float:
    """Issue 16's promise: 1.1 x the slowest project's paced time, plus latency."""
    return 1.1 * endpoints * SPACING + LATENCY


def test_workers_whose_project_is_done_help_the_others(
    run_virtually: RunVirtually[float], mocked_atlas: aioresponses
) -> None:
    """Answers 2 s late: the request slots, not pacing, bind. The large project's own share
    of workers, 9 of 10, would need 11 rounds of 2 s for its 99 requests after the session's
    first exchange and the small projects' round; with the small ones' workers helping once
    they are done, every slot stays busy."""
    atlas = VirtualAtlas(latency=2.0)
    mocked_atlas.get(ENDPOINT_URLS, callback=atlas.answer, repeat=True)
    cycle = run_virtually(timed_cycle(fleet([100] + [1] * 10, "grouped"), concurrency=10))
    assert atlas.peak == 10
    own_share_alone = 2.0 + 2.0 + math.ceil(99 / 9) * 2.0
    assert cycle < own_share_alone


@pytest.mark.parametrize(
    ("sizes", "order"),
    [
        ([100, 100, 100], "grouped"),
        ([100] + [5] * 40, "grouped"),
        ([100] + [5] * 40, "reversed"),
        ([10] * 50 + [100], "grouped"),
    ],
    ids=["3-large-grouped", "large-first", "large-last", "large-after-50-small"],
)
def test_a_paced_cycle_lasts_as_long_as_its_slowest_project_in_any_config_order(
    run_virtually: RunVirtually[float],
    mocked_atlas: aioresponses,
    sizes: list[int],
    order: str,
) -> None:
    atlas = VirtualAtlas()
    mocked_atlas.get(ENDPOINT_URLS, callback=atlas.answer, repeat=True)
    cycle = run_virtually(timed_cycle(fleet(sizes, order), concurrency=25))
    assert (max(sizes) - 1) * SPACING <= cycle <= cycle_bound(max(sizes))
    # Pacing still holds: no project starts more than its share in any second.
    for starts in atlas.started.values():
        assert max(starts_within_a_second(starts)) <= PER_MINUTE / 60 + 1
    assert atlas.peak <= 25


def test_grouped_and_interleaved_configs_take_the_same_time(
    run_virtually: RunVirtually[float], mocked_atlas: aioresponses
) -> None:
    mocked_atlas.get(ENDPOINT_URLS, callback=VirtualAtlas().answer, repeat=True)
    grouped = run_virtually(timed_cycle(fleet([100, 100, 100], "grouped"), concurrency=25))
    interleaved = run_virtually(timed_cycle(fleet([100, 100, 100], "interleaved"), concurrency=25))
    assert grouped == pytest.approx(interleaved, abs=1e-6)
    assert grouped == pytest.approx(paced_time(100), abs=1e-6)


def test_requests_in_flight_never_exceed_the_concurrency_across_projects(
    run_virtually: RunVirtually[float], mocked_atlas: aioresponses
) -> None:
    # 30 projects whose first requests are all due at once, answers 1 s late.
    atlas = VirtualAtlas(latency=1.0)
    mocked_atlas.get(ENDPOINT_URLS, callback=atlas.answer, repeat=True)
    cycle = run_virtually(timed_cycle(fleet([3] * 30, "grouped"), concurrency=4))
    assert atlas.peak == 4
    assert sum(map(len, atlas.started.values())) == 90
    assert cycle == pytest.approx(1.0 + 90 / 4 * 1.0, abs=1.0)  # the slots, not pacing, bind


def starts_within_a_second(starts: list[float]) -> list[int]:
    """For each request, how many of the project's requests started in the second from it."""
    return [bisect.bisect_left(starts, start + 1.0 - 1e-6) - k for k, start in enumerate(starts)]


def gaps(starts: list[float]) -> list[float]:
    return list(map(operator.sub, starts[1:], starts))


def cycle_beside_a_throttled_project(
    run_virtually: RunVirtually[float],
    mocked_atlas: aioresponses,
    answer: tuple[int, dict[str, str]],
) -> list[float]:
    """Project 0, listed first with as many endpoints as there are request slots, gets
    ``answer``; projects 1 and 2 must still finish in their paced time, as the throttled
    project no longer holds every slot while it waits. Returns project 0's request starts."""
    throttled = project_id(0)
    atlas = VirtualAtlas(throttled={throttled: answer})
    mocked_atlas.get(ENDPOINT_URLS, callback=atlas.answer, repeat=True)
    cycle = run_virtually(timed_cycle(fleet([40, 40, 40], "grouped"), concurrency=10))
    for other in (project_id(1), project_id(2)):
        assert atlas.finished(other) - min(atlas.started[other]) <= paced_time(40) + 1e-6
    starts = atlas.started[throttled]
    assert len(starts) == 40 + (answer[0] == 429)
    assert cycle == pytest.approx(atlas.finished(throttled) - starts[0])
    return starts


def test_a_project_paused_by_a_429_waits_alone(
    run_virtually: RunVirtually[float], mocked_atlas: aioresponses
) -> None:
    first, *rest = cycle_beside_a_throttled_project(
        run_virtually, mocked_atlas, (429, {"Retry-After": "30"})
    )
    assert min(rest) >= first + LATENCY + 30 - 1e-6  # the pause holds for the whole project
    assert min(gaps(rest)) >= SPACING - 1e-6


def test_a_project_slowed_by_its_ratelimit_headers_slows_down_alone(
    run_virtually: RunVirtually[float], mocked_atlas: aioresponses
) -> None:
    low = {"RateLimit-Limit": "60", "RateLimit-Remaining": "1"}
    starts = cycle_beside_a_throttled_project(run_virtually, mocked_atlas, (200, low))
    # The second request's slot was set before the first answer told of the low bucket.
    assert min(gaps(starts[1:])) >= 60 / 60 - 1e-6


def test_on_v2_a_project_whose_service_check_is_throttled_holds_back_no_other_project(
    run_virtually: RunVirtually[float], mocked_atlas: aioresponses
) -> None:
    """A project's endpoint service is checked first in its own lane, then its endpoints:
    were all services checked before any endpoint, one project's 429 would hold back every
    other project's endpoints for its Retry-After."""
    throttled = project_id(0)
    atlas = VirtualAtlas(v2=True, throttled={throttled: (429, {"Retry-After": "30"})})
    mocked_atlas.get(V2_URLS, callback=atlas.answer, repeat=True)
    with capture_logs() as logs:
        cycle = run_virtually(timed_cycle(fleet([10, 10, 10], "grouped"), 10, api_version="v2"))

    warnings = {line["event"] for line in logs if line["log_level"] == "warning"}
    assert warnings == {"atlas_project_throttled", "atlas_request_retry"}  # and no failure
    started = min(min(starts) for starts in atlas.started.values())
    for other in (project_id(1), project_id(2)):
        assert len(atlas.started[other]) == 1 + 10  # its service, then its endpoints
        assert atlas.finished(other) - started <= paced_time(11) + LATENCY + 1e-6
    assert len(atlas.started[throttled]) == 1 + 1 + 10  # the 429, then served again
    assert cycle >= 30


async def test_over_real_sockets_a_large_project_listed_first_does_not_hold_up_the_others(
    start_simulator: StartSimulator,
) -> None:
    """Against the simulator, 120 requests a minute per project and two request slots: the
    first project's third endpoint is due 1 s into the cycle, the other projects' second
    ones after 0.5 s. Handed out in config order, both slots waited on the first project."""
    large, *others = (
        [
            endpoint_entry(
                group_id=project_id(project),
                interface_endpoint_id=endpoint_id(project * 10 + index),
                name=f"p{project}-{index}",
            )
            for index in range(size)
        ]
        for project, size in enumerate([3, 2, 2])
    )
    entries = [*large, *itertools.chain.from_iterable(others)]
    _, url = await start_simulator(Scenario(endpoints=[simulated(entry) for entry in entries]))
    settings = settings_for(
        url, endpoints=entries, poll={"concurrency": 2, "max_requests_per_minute": 120}
    )
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            await asyncio.wait_for(monitor.run_cycle(client), 10)
    seen = [line["name"] for line in events_in(logs, "endpoint_status_changed")]
    assert sorted(seen) == sorted(entry["name"] for entry in entries)
    assert seen[-1].startswith("p0-"), seen  # the others were done before its third


async def test_polls_this_host_cannot_make_are_local_errors_and_never_fire_unreachable(
    start_simulator: StartSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors, no socket to Atlas can be created (EMFILE, wrapped by
    aiohttp in ClientConnectorError): the endpoint is not up, the local error is counted,
    and `unreachable` (here after a single failed poll) does not fire; once descriptors
    are back the next poll answers."""
    _, url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    settings = settings_for(url, endpoints=[HEALTHY], alerts={"unreachable_after_failures": 1})

    async def out_of_descriptors(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            with monkeypatch.context() as patched:
                patched.setattr(asyncio.get_running_loop(), "create_connection", out_of_descriptors)
                for _ in range(3):
                    await monitor.run_cycle(client)
                (endpoint,) = monitor.endpoints
                starved = monitor.state_of(endpoint)
            await monitor.run_cycle(client)
            recovered = monitor.state_of(endpoint)
    assert alerts_in(logs) == []
    assert starved is not None
    assert (starved.up, starved.consecutive_failures) == (False, 0)
    assert starved.last_failure == "not sent, this host is out of resources: Too many open files"
    assert recovered is not None
    assert recovered.up is True
    registry = monitor.metrics.registry
    assert registry.get_sample_value("atlas_monitor_local_errors_total", {"cause": "EMFILE"}) == 3
    assert registry.get_sample_value("atlas_monitor_local_errors_total", {"cause": "ENFILE"}) == 0
