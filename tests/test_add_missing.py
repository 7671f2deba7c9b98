"""Add-on-missing against the simulator: POST once, dry run, bounded retries, recreate."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from structlog.testing import capture_logs

from monitor.config import EndpointConfig
from monitor.polling.poller import Monitor
from monitor.simulator import Fault, Scenario, Simulator
from tests.helpers import (
    FakeClock,
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

MISSING = endpoint_entry(interface_endpoint_id=endpoint_id(4), name="missing")


def added_total(monitor: Monitor, result: str) -> float | None:
    return monitor.metrics.registry.get_sample_value(
        "atlas_monitor_endpoints_added_total", {"result": result}
    )


async def test_a_missing_endpoint_is_added_once_and_then_watched(
    start_simulator: StartSimulator,
) -> None:
    simulator, url = await start_simulator(Scenario(endpoints=[simulated(MISSING, exists=False)]))
    settings = settings_for(url, endpoints=[{**MISSING, "add_if_missing": True}])
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            for _ in range(3):
                await monitor.run_cycle(client)
    assert simulator.stats.requests[("POST", 201)] == 1
    assert (
        sum(count for (method, _), count in simulator.stats.requests.items() if method == "POST")
        == 1
    )
    (added,) = events_in(logs, "endpoint_added")
    assert (added["name"], added["attempt"], added["connection_status"]) == ("missing", 1, "NONE")
    assert alerts_in(logs) == []
    assert added_total(monitor, "added") == 1
    state = monitor.state_of(EndpointConfig.model_validate(MISSING))
    assert state is not None
    assert state.up
    assert state.added_by_monitor


async def test_dry_run_reports_once_changes_nothing_and_alerts_not_found(
    start_simulator: StartSimulator,
) -> None:
    simulator, url = await start_simulator(Scenario(endpoints=[simulated(MISSING, exists=False)]))
    settings = settings_for(
        url, endpoints=[MISSING], add_missing={"enabled": True, "dry_run": True}
    )
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            for _ in range(3):
                await monitor.run_cycle(client)
    assert simulator.stats.requests[("GET", 404)] == 3
    assert simulator.stats.total() == 1 + 3
    assert len(events_in(logs, "endpoint_add_dry_run")) == 1
    assert events_in(logs, "endpoint_added") == []
    assert alerts_in(logs) == [("missing", "not_found", "firing")]
    (alert,) = events_in(logs, "alert")
    assert alert["error_message"] == "not added: add_missing.dry_run is on"
    assert added_total(monitor, "dry_run") == 1


async def test_a_refused_add_is_retried_per_cycle_up_to_max_attempts(
    start_simulator: StartSimulator,
) -> None:
    refused = Fault(methods=["POST"], status=400, error_code="INVALID_ATTRIBUTE")
    simulator, url = await start_simulator(
        Scenario(endpoints=[simulated(MISSING, exists=False, faults=[refused])])
    )
    settings = settings_for(
        url, endpoints=[MISSING], add_missing={"enabled": True, "max_attempts": 2}
    )
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            for _ in range(4):
                await monitor.run_cycle(client)
    assert simulator.stats.requests[("POST", 400)] == 2
    failures = events_in(logs, "endpoint_add_failed")
    assert [(line["attempt"], line["error_code"], line["log_level"]) for line in failures] == [
        (1, "INVALID_ATTRIBUTE", "error"),
        (2, "INVALID_ATTRIBUTE", "error"),
    ]
    assert alerts_in(logs) == [("missing", "not_found", "firing")]
    (alert,) = events_in(logs, "alert")
    assert alert["error_message"].startswith("adding it failed: 400 INVALID_ATTRIBUTE: ")
    assert alert["connection_status"] is None
    assert added_total(monitor, "failed") == 2


async def test_recreate_deletes_a_failed_endpoint_it_added_then_adds_it_again(
    start_simulator: StartSimulator,
) -> None:
    clock = FakeClock(1000.0)
    simulator, url = await start_simulator(
        Scenario(step_seconds=10, endpoints=[simulated(MISSING, exists=False)]),
        clock=clock,
    )
    settings = settings_for(
        url,
        endpoints=[MISSING],
        add_missing={"enabled": True, "recreate_failed": True, "max_attempts": 2},
    )
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            await monitor.run_cycle(client)  # 404: POST (attempt 1)
            simulator.set_endpoint(**ids_of(MISSING), status="REJECTED")
            await monitor.run_cycle(client)  # REJECTED: DELETE
            assert simulator.endpoint_state(**ids_of(MISSING))["connectionStatus"] == "DELETING"  # type: ignore[index]
            await monitor.run_cycle(client)  # DELETING: wait
            clock.now += 10
            await monitor.run_cycle(client)  # gone, 404: POST (attempt 2)
            simulator.set_endpoint(**ids_of(MISSING), status="REJECTED")
            await monitor.run_cycle(client)  # REJECTED again, attempts used up: leave it
            await monitor.run_cycle(client)
    assert simulator.stats.requests[("POST", 201)] == 2
    assert simulator.stats.requests[("DELETE", 204)] == 1
    assert [line["attempt"] for line in events_in(logs, "endpoint_added")] == [1, 2]
    (deleted,) = events_in(logs, "endpoint_deleted_for_recreate")
    assert deleted["connection_status"] == "REJECTED"
    assert alerts_in(logs) == [
        ("missing", "rejected", "firing"),
        ("missing", "rejected", "resolved"),
        ("missing", "rejected", "firing"),
    ]


def posts(simulator: Simulator) -> int:
    return sum(count for (method, _), count in simulator.stats.requests.items() if method == "POST")


async def test_a_restarted_monitor_finds_the_endpoint_it_added_and_does_not_post_again(
    start_simulator: StartSimulator,
) -> None:
    simulator, url = await start_simulator(Scenario(endpoints=[simulated(MISSING, exists=False)]))
    settings = settings_for(url, endpoints=[{**MISSING, "add_if_missing": True}])
    for _ in range(2):  # two processes, one after the other: no state survives in between
        async with monitoring(settings) as (monitor, client):
            await monitor.run_cycle(client)
            await monitor.run_cycle(client)

    assert posts(simulator) == 1
    assert simulator.stats.by_endpoint[("GET", MISSING["interface_endpoint_id"])] == 4


async def test_a_post_that_timed_out_is_followed_by_a_get_never_by_a_second_post(
    start_simulator: StartSimulator,
) -> None:
    slow_post = Fault(methods=["POST"], latency_seconds=0.5, times=1)
    simulator, url = await start_simulator(
        Scenario(endpoints=[simulated(MISSING, exists=False, faults=[slow_post])])
    )
    settings = settings_for(
        url,
        endpoints=[{**MISSING, "add_if_missing": True}],
        atlas={"timeout_seconds": 0.2, "max_retries": 2},
    )
    with capture_logs() as logs:
        async with monitoring(settings) as (monitor, client):
            await monitor.run_cycle(client)
            # The POST's answer was lost and the GET came before Atlas (the simulator) had
            # created the endpoint: nothing more is sent this cycle.
            assert posts(simulator) == 0  # the slow POST has not even been answered yet
            assert simulator.stats.by_endpoint[("GET", MISSING["interface_endpoint_id"])] == 2
            await created(simulator, MISSING)
            await monitor.run_cycle(client)

    assert posts(simulator) == 1
    (failed,) = events_in(logs, "endpoint_add_failed")
    assert failed["cause"] == "no answer within 0.2 s"
    assert alerts_in(logs) == [
        ("missing", "not_found", "firing"),
        ("missing", "not_found", "resolved"),
    ]
    assert events_in(logs, "alert")[0]["error_message"] == (
        "adding it failed: no answer within 0.2 s"
    )
    state = monitor.state_of(EndpointConfig.model_validate(MISSING))
    assert state is not None
    assert state.up


async def created(simulator: Simulator, entry: dict[str, Any]) -> None:
    """Until the simulator has finished creating the endpoint (bounded: 5 s)."""
    async with asyncio.timeout(5):
        for _ in itertools.count():
            if simulator.endpoint_state(**ids_of(entry)) is not None:
                return
            await asyncio.sleep(0.02)
