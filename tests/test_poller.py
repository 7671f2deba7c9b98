"""Polling fan-out: bounded, ordered, and one bad endpoint never spoils the rest."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr
from structlog.testing import capture_logs

from monitor.atlas import (
    AtlasClient,
    AtlasServerError,
    ConnectionStatus,
    EndpointRef,
    InterfaceEndpoint,
)
from monitor.config import EndpointConfig
from monitor.poller import poll_endpoints
from monitor.simulator import Scenario, ScenarioEndpoint
from tests.conftest import GROUP_ID, PRIVATE_KEY, PRIVATE_LINK_ID, PUBLIC_KEY, StartSimulator


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
                method="GET", path=ref.path, status=500, error_code="UNEXPECTED_ERROR", detail=None
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
        public_key=PUBLIC_KEY,
        private_key=SecretStr(PRIVATE_KEY),
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
