"""Atlas v2 end to end: the real simulator over sockets and the real daemon (issue 8).

Per-provider state sets and alerts, v1.0 left as it was, endpoint-service gauges and alerts,
discovery, the service-account login and the RateLimit slow-down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from monitor.atlas import (
    ENDPOINT_STATUSES,
    SERVICE_STATUSES,
    CloudProvider,
)
from monitor.config import Settings
from monitor.simulator import Scenario, ScenarioEndpoint, ScenarioService
from tests.conftest import (
    GROUP_ID,
    RunningDaemon,
    StartDaemon,
    StartSimulator,
    endpoint_id,
    events_in,
    settings_for,
)

OTHER_GROUP_ID = "6f0a1b2c3d4e5f6a7b8c9d0e"
AWS_SERVICE = "65a1b2c3d4e5f60718293a51"
AZURE_SERVICE = "65a1b2c3d4e5f60718293a52"
GCP_SERVICE = "65a1b2c3d4e5f60718293a53"
AZURE_PREFIX = (
    "/subscriptions/0f3a6c2e-1b2d-4c5e-8f90-a1b2c3d4e5f6/resourceGroups/Net-RG"
    "/providers/Microsoft.Network/privateEndpoints/"
)
CLIENT_ID = "mdb_sa_id_65a1b2c3d4e5f60718293a5f"
CLIENT_SECRET = "mdb_sa_sk_test-secret-6c1f0e"
CYCLE_TIMEOUT = 15.0
# The contract's alert fields (level and timestamp come from the logging pipeline).
ALERT_FIELDS = {
    "alert",
    "state",
    "group_id",
    "private_link_id",
    "interface_endpoint_id",
    "name",
    "connection_status",
    "previous_status",
    "error_message",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass(frozen=True)
class Provider:
    """One provider's endpoints for the per-provider test: ids and what Atlas says."""

    cloud_provider: CloudProvider
    service_id: str
    region: str
    healthy: str
    bad: str
    """Status that is the provider's "will not connect": REJECTED or FAILED."""
    bad_alert: str
    provisioning: str
    """A status still on its way to AVAILABLE."""
    foreign: str
    """A status of another provider, which is UNKNOWN here."""
    ids: tuple[str, str, str, str, str]
    """healthy, bad, with an errorMessage, provisioning, foreign."""


PROVIDERS = {
    "AWS": Provider(
        CloudProvider.AWS,
        AWS_SERVICE,
        "eu-west-1",
        "AVAILABLE",
        "REJECTED",
        "rejected",
        "PENDING_ACCEPTANCE",
        "VERIFIED",
        tuple(endpoint_id(number) for number in range(1, 6)),  # type: ignore[arg-type]
    ),
    "AZURE": Provider(
        CloudProvider.AZURE,
        AZURE_SERVICE,
        "EUROPE_WEST",
        "AVAILABLE",
        "FAILED",
        "failed",
        "INITIATING",
        "PENDING_ACCEPTANCE",
        tuple(f"{AZURE_PREFIX}pe-{name}" for name in ("orders", "bad", "err", "new", "odd")),  # type: ignore[arg-type]
    ),
    "GCP": Provider(
        CloudProvider.GCP,
        GCP_SERVICE,
        "WESTERN_EUROPE",
        "AVAILABLE",
        "FAILED",
        "failed",
        "VERIFIED",
        "REJECTED",
        ("psc-orders", "psc-bad", "psc-err", "psc-new", "psc-odd"),
    ),
}


# --- helpers ---------------------------------------------------------------------------


async def scrape_text(url: str) -> str:
    assert url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def scrape(url: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await scrape_text(url))
        for sample in family.samples
    }


def series(samples: Samples, metric: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``metric`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return {
        sample_labels: sample_value
        for (name, sample_labels), sample_value in samples.items()
        if name == metric and wanted <= sample_labels
    }


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def state_set(samples: Samples, metric: str, **labels: str) -> dict[str, float]:
    """status label -> value of one state set."""
    return {
        dict(sample_labels)["status"]: sample_value
        for sample_labels, sample_value in series(samples, metric, **labels).items()
    }


def entry(provider: CloudProvider, service_id: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    """A config endpoint entry on ``provider``."""
    return {
        "group_id": GROUP_ID,
        "private_link_id": service_id,
        "cloud_provider": provider.value,
        "interface_endpoint_id": endpoint,
        **extra,
    }


def at_atlas(
    provider: CloudProvider, service_id: str, endpoint: str, **state: Any
) -> ScenarioEndpoint:
    return ScenarioEndpoint(
        group_id=GROUP_ID,
        private_link_id=service_id,
        cloud_provider=provider.value,
        interface_endpoint_id=endpoint,
        **state,
    )


def endpoint_labels(service_id: str, endpoint: str) -> dict[str, str]:
    return {"group_id": GROUP_ID, "private_link_id": service_id, "interface_endpoint_id": endpoint}


def service_labels(provider: CloudProvider, service_id: str) -> dict[str, str]:
    return {"group_id": GROUP_ID, "private_link_id": service_id, "cloud_provider": provider.value}


def v2_settings(atlas_url: str, **sections: Any) -> Settings:
    """settings_for with atlas.api_version v2, no retries, and fast cycles."""
    atlas = {"api_version": "v2", "timeout_seconds": 5, "max_retries": 0}
    atlas.update(sections.pop("atlas", {}))
    poll = {"interval_seconds": 0.2, **sections.pop("poll", {})}
    return settings_for(atlas_url, atlas=atlas, poll=poll, **sections)


def alert_lines(logs: Iterable[Mapping[str, Any]], *alerts: str) -> list[Mapping[str, Any]]:
    return [line for line in events_in(logs, "alert") if not alerts or line["alert"] in alerts]


def alert_keys(logs: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(alert, state, interface_endpoint_id) of every alert line, in order."""
    return [
        (line["alert"], line["state"], line["interface_endpoint_id"]) for line in alert_lines(logs)
    ]


async def cycles(daemon: RunningDaemon, more: int) -> None:
    """Until ``more`` further cycles have completed; with 2, one started after this call."""
    target = daemon.monitor.cycles_completed + more
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(target), CYCLE_TIMEOUT)


def request_paths(logs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The path of every API request the simulator answered (its debug log)."""
    return [line["path"] for line in events_in(logs, "simulator_request")]


# --- 1. one test per provider ----------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS.values(), ids=PROVIDERS.keys())
async def test_each_provider_has_its_own_state_set_alerts_and_service_gauges(
    provider: Provider, start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    cloud, service = provider.cloud_provider, provider.service_id
    healthy, bad, erring, provisioning, foreign = provider.ids
    simulator, atlas_url = await start_simulator(
        Scenario(
            endpoint_services=[
                ScenarioService(
                    group_id=GROUP_ID,
                    id=service,
                    cloud_provider=cloud.value,
                    region=provider.region,
                )
            ],
            endpoints=[
                at_atlas(cloud, service, healthy, status=provider.healthy),
                at_atlas(cloud, service, bad, status=provider.bad),
                at_atlas(cloud, service, erring, error_message="quota exceeded in subnet"),
                at_atlas(cloud, service, provisioning, status=provider.provisioning),
                at_atlas(cloud, service, foreign, status=provider.foreign),
            ],
        )
    )
    clock = FakeClock()
    names = ("orders", "payments", "search", "billing", "odd")
    settings = v2_settings(
        atlas_url,
        endpoints=[
            entry(cloud, service, endpoint, name=name)
            for endpoint, name in zip(provider.ids, names, strict=True)
        ],
        alerts={"stuck_after_seconds": 1},
    )
    with capture_logs() as logs:
        daemon = await start_daemon(settings, clock=clock)
        await cycles(daemon, 1)
        first = await scrape(daemon.url)
        clock.advance(5)  # past stuck_after_seconds for the endpoint still provisioning
        await cycles(daemon, 2)
        later = await scrape(daemon.url)

    own_statuses = {status.value for status in ENDPOINT_STATUSES[cloud]}
    assert "UNKNOWN" in own_statuses
    expected = {
        healthy: provider.healthy,
        bad: provider.bad,
        erring: "AVAILABLE",
        provisioning: provider.provisioning,
        foreign: "UNKNOWN",
    }
    for endpoint, current in expected.items():
        labels = endpoint_labels(service, endpoint)
        statuses = state_set(first, "atlas_interface_endpoint_status", **labels)
        assert set(statuses) == own_statuses, endpoint
        assert statuses == {status: float(status == current) for status in own_statuses}
        assert value(first, "atlas_interface_endpoint_up", **labels) == 1
        assert value(first, "atlas_interface_endpoint_error", **labels) == (endpoint == erring)
        (info,) = series(first, "atlas_interface_endpoint_info", **labels)
        assert dict(info)["cloud_provider"] == cloud.value

    # The endpoint service: its provider's state set, up, no error, and its region.
    ids = service_labels(cloud, service)
    service_statuses = state_set(first, "atlas_endpoint_service_status", **ids)
    assert service_statuses == {
        status.value: float(status.value == "AVAILABLE") for status in SERVICE_STATUSES[cloud]
    }
    assert value(first, "atlas_endpoint_service_up", **ids) == 1
    assert value(first, "atlas_endpoint_service_error", **ids) == 0
    assert value(first, "atlas_endpoint_service_info", **ids, region=provider.region) == 1

    # Alerts: the provider's "will not connect", the errorMessage, then stuck; once each.
    assert sorted(alert_keys(logs)) == sorted(
        [
            (provider.bad_alert, "firing", bad),
            ("error_message", "firing", erring),
            ("stuck", "firing", provisioning),
        ]
    )
    (bad_line,) = alert_lines(logs, provider.bad_alert)
    assert bad_line.keys() >= ALERT_FIELDS
    assert bad_line["log_level"] == "error"
    assert bad_line["group_id"] == GROUP_ID
    assert bad_line["private_link_id"] == service
    assert bad_line["name"] == "payments"
    assert bad_line["connection_status"] == provider.bad
    assert bad_line["previous_status"] is None
    assert bad_line["error_message"] is None
    (error_line,) = alert_lines(logs, "error_message")
    assert error_line["error_message"] == "quota exceeded in subnet"
    assert error_line["interface_endpoint_id"] == erring
    (stuck_line,) = alert_lines(logs, "stuck")
    assert stuck_line["connection_status"] == provider.provisioning
    assert value(later, "atlas_monitor_alerts_total", alert=provider.bad_alert) == 1
    assert value(later, "atlas_monitor_alerts_total", alert="stuck") == 1

    # Every request went to v2, and every endpoint's id came back intact (Azure's slashes
    # travel URL-encoded and are decoded once by Atlas).
    paths = request_paths(logs)
    assert paths
    assert all(path.startswith("/api/atlas/v2/") for path in paths)
    for endpoint in provider.ids:
        assert simulator.stats.by_endpoint[("GET", endpoint)] >= 3, endpoint


# --- 2. v1.0 unchanged -----------------------------------------------------------------


async def test_v1_stays_as_it_was_without_endpoint_services(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    healthy, rejected = endpoint_id(1), endpoint_id(2)
    simulator, atlas_url = await start_simulator(
        Scenario(
            endpoints=[
                at_atlas(CloudProvider.AWS, AWS_SERVICE, healthy),
                at_atlas(CloudProvider.AWS, AWS_SERVICE, rejected, status="REJECTED"),
            ]
        )
    )
    settings = settings_for(
        atlas_url,
        endpoints=[
            {"group_id": GROUP_ID, "private_link_id": AWS_SERVICE, "interface_endpoint_id": ident}
            for ident in (healthy, rejected)
        ],
        poll={"interval_seconds": 0.2},
    )
    assert settings.config.atlas.api_version.value == "v1.0"
    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await cycles(daemon, 2)
        samples = await scrape(daemon.url)

    paths = request_paths(logs)
    assert paths
    assert all(path.startswith("/api/atlas/v1.0/") for path in paths)
    assert all("/interfaceEndpoints/" in path for path in paths)
    assert {method for method, _ in simulator.stats.by_endpoint} == {"GET"}
    assert {ident for _, ident in simulator.stats.by_endpoint} == {healthy, rejected}
    assert not [key for key in samples if key[0].startswith("atlas_endpoint_service_")]
    labels = endpoint_labels(AWS_SERVICE, rejected)
    assert state_set(samples, "atlas_interface_endpoint_status", **labels) == {
        status.value: float(status.value == "REJECTED")
        for status in ENDPOINT_STATUSES[CloudProvider.AWS]
    }
    assert alert_keys(logs) == [("rejected", "firing", rejected)]


# --- 3. endpoint service alerts --------------------------------------------------------


async def test_a_failed_endpoint_service_alerts_once_and_resolves_once(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    cloud, service = CloudProvider.AZURE, AZURE_SERVICE
    endpoint = f"{AZURE_PREFIX}pe-orders"
    simulator, atlas_url = await start_simulator(
        Scenario(endpoints=[at_atlas(cloud, service, endpoint)])
    )
    settings = v2_settings(atlas_url, endpoints=[entry(cloud, service, endpoint)])
    ids = service_labels(cloud, service)
    reason = "subnet has network policies enabled"
    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await cycles(daemon, 1)
        assert value(await scrape(daemon.url), "atlas_endpoint_service_error", **ids) == 0
        simulator.set_service(GROUP_ID, cloud.value, service, status="FAILED", error_message=reason)
        await cycles(daemon, 3)
        failing = await scrape(daemon.url)
        firing = alert_lines(logs)
        simulator.set_service(GROUP_ID, cloud.value, service, status="AVAILABLE")
        await cycles(daemon, 3)
        recovered = await scrape(daemon.url)

    assert sorted((line["alert"], line["state"]) for line in firing) == [
        ("service_error_message", "firing"),
        ("service_failed", "firing"),
    ]
    for line in firing:
        assert line.keys() >= ALERT_FIELDS
        assert line["log_level"] == "error"
        assert line["group_id"] == GROUP_ID
        assert line["private_link_id"] == service
        assert line["interface_endpoint_id"] is None
        assert line["connection_status"] == "FAILED"
        assert line["previous_status"] == "AVAILABLE"
        assert line["error_message"] == reason
        assert service in line["name"]
    resolved = alert_lines(logs)[len(firing) :]
    assert sorted((line["alert"], line["state"]) for line in resolved) == [
        ("service_error_message", "resolved"),
        ("service_failed", "resolved"),
    ]
    assert all(line["log_level"] == "info" for line in resolved)

    assert state_set(failing, "atlas_endpoint_service_status", **ids)["FAILED"] == 1
    assert value(failing, "atlas_endpoint_service_error", **ids) == 1
    assert value(failing, "atlas_monitor_alerts_total", alert="service_failed") == 1
    assert value(failing, "atlas_monitor_alerts_total", alert="service_error_message") == 1
    assert state_set(recovered, "atlas_endpoint_service_status", **ids)["AVAILABLE"] == 1
    assert value(recovered, "atlas_endpoint_service_error", **ids) == 0
    # The endpoint itself was never affected.
    assert (
        value(recovered, "atlas_interface_endpoint_up", **endpoint_labels(service, endpoint)) == 1
    )
