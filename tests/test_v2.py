"""Atlas v2 end to end: the real simulator over sockets and the real daemon (issue 8).

Per-provider state sets and alerts, v1.0 left as it was, endpoint-service gauges and alerts,
discovery, the service-account login and the RateLimit slow-down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.testing import capture_logs
from structlog.typing import EventDict

from monitor.atlas import V2_MEDIA_TYPE, ServiceAccount
from monitor.config import Credentials, Settings
from monitor.providers import ENDPOINT_STATUSES, SERVICE_STATUSES, CloudProvider
from monitor.simulator import Scenario, ScenarioEndpoint, ScenarioService
from tests.helpers import (
    AWS_SERVICE,
    GROUP_ID,
    PRIVATE_KEY,
    PUBLIC_KEY,
    FakeClock,
    RunningDaemon,
    StartDaemon,
    StartSimulator,
    at_atlas,
    endpoint_id,
    events_in,
    settings_for,
    v2_settings,
)

OTHER_GROUP_ID = "6f0a1b2c3d4e5f6a7b8c9d0e"
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
        "EU_WEST_1",
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


def endpoint_labels(service_id: str, endpoint: str) -> dict[str, str]:
    return {"group_id": GROUP_ID, "private_link_id": service_id, "interface_endpoint_id": endpoint}


def service_labels(provider: CloudProvider, service_id: str) -> dict[str, str]:
    return {"group_id": GROUP_ID, "private_link_id": service_id, "cloud_provider": provider.value}


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
    clock = FakeClock(1_700_000_000.0)
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
    message = "atlas_endpoint_service_error_message_info"
    assert value(failing, message, **ids, error_message=reason) == 1
    assert series(recovered, message, **ids) == {}
    assert value(failing, "atlas_monitor_alerts_total", alert="service_failed") == 1
    assert value(failing, "atlas_monitor_alerts_total", alert="service_error_message") == 1
    assert state_set(recovered, "atlas_endpoint_service_status", **ids)["AVAILABLE"] == 1
    assert value(recovered, "atlas_endpoint_service_error", **ids) == 0
    # The endpoint itself was never affected.
    assert (
        value(recovered, "atlas_interface_endpoint_up", **endpoint_labels(service, endpoint)) == 1
    )


# --- 4. discovery ----------------------------------------------------------------------


async def drain_rate_limit(atlas_url: str, group_id: str, most: int) -> int:
    """Use up the project's rate-limit bucket as another client of the project would;
    returns how many requests it took to get a 429."""
    assert atlas_url.startswith("http://127.0.0.1:")
    url = f"{atlas_url}/api/atlas/v2/groups/{group_id}/privateEndpoint/GCP/endpointService"
    digest = aiohttp.DigestAuthMiddleware(PUBLIC_KEY, PRIVATE_KEY, preemptive=True)
    headers = {"Accept": V2_MEDIA_TYPE}
    async with aiohttp.ClientSession(middlewares=(digest,), headers=headers) as session:
        for sent in range(1, most + 1):
            async with session.get(url) as response:
                if response.status == 429:
                    return sent
                assert response.status == 200
    raise AssertionError(f"no 429 within {most} requests")


async def test_discovery_finds_every_endpoint_forgets_removed_ones_and_survives_a_failed_listing(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    healthy, rejected, elsewhere = endpoint_id(1), endpoint_id(2), endpoint_id(3)
    azure = f"{AZURE_PREFIX}pe-orders"
    sim_clock = FakeClock(1000.0)
    simulator, atlas_url = await start_simulator(
        Scenario(
            rate_limit_per_minute=600,
            endpoint_services=[
                ScenarioService(group_id=GROUP_ID, id=AWS_SERVICE, region="EU_WEST_1"),
            ],
            endpoints=[
                at_atlas(CloudProvider.AWS, AWS_SERVICE, healthy),
                at_atlas(CloudProvider.AWS, AWS_SERVICE, rejected, status="REJECTED"),
                at_atlas(CloudProvider.AZURE, AZURE_SERVICE, azure),
                # Not asked for: another provider, another project.
                at_atlas(CloudProvider.GCP, GCP_SERVICE, "psc-orders"),
                ScenarioEndpoint(
                    group_id=OTHER_GROUP_ID,
                    private_link_id=AWS_SERVICE,
                    interface_endpoint_id=elsewhere,
                ),
            ],
        ),
        clock=sim_clock,
    )
    settings = v2_settings(
        atlas_url,
        endpoints=[],
        discover=[
            {
                "group_id": GROUP_ID,
                "cloud_providers": ["AWS", "AZURE"],
                "labels": {"team": "network"},
            }
        ],
        poll={"discover_every_cycles": 1, "interval_seconds": 0.3},
        alerts={"unreachable_after_failures": 10},
    )
    listing_failed = asyncio.Event()

    def note_listing_failure(logger: object, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict["event"] == "discovery_failed":
            listing_failed.set()
        return event_dict

    with capture_logs(processors=[note_listing_failure]) as logs:
        daemon = await start_daemon(settings)
        await cycles(daemon, 2)
        found = await scrape(daemon.url)
        # Right after a cycle, before the next one starts (and lists the services again).
        simulator.remove_endpoint(GROUP_ID, AWS_SERVICE, rejected)
        await cycles(daemon, 2)
        after_removal = await scrape(daemon.url)
        removal_logs = list(logs)

        # Another client of the project uses up its rate limit: the listing gets 429.
        await drain_rate_limit(atlas_url, GROUP_ID, most=700)
        await asyncio.wait_for(listing_failed.wait(), CYCLE_TIMEOUT)
        sim_clock.advance(60)  # the bucket refills
        await cycles(daemon, 2)
        recovered = await scrape(daemon.url)
        failed_logs = logs[len(removal_logs) :]

    infos = series(found, "atlas_interface_endpoint_info")
    shown = {dict(labels)["interface_endpoint_id"]: dict(labels) for labels in infos}
    assert set(shown) == {healthy, rejected, azure}
    assert shown[healthy]["cloud_provider"] == "AWS"
    assert shown[azure]["cloud_provider"] == "AZURE"
    assert shown[azure]["name"] == "pe-orders"
    assert shown[azure]["private_link_id"] == AZURE_SERVICE
    assert all(labels["team"] == "network" for labels in shown.values())
    assert all(labels["group_id"] == GROUP_ID for labels in shown.values())
    for ident, service in ((healthy, AWS_SERVICE), (azure, AZURE_SERVICE)):
        assert value(found, "atlas_interface_endpoint_up", **endpoint_labels(service, ident)) == 1
    assert value(found, "atlas_monitor_endpoints_configured") == 3
    discovered = {line["interface_endpoint_id"] for line in events_in(logs, "endpoint_discovered")}
    assert discovered == {healthy, rejected, azure}

    # The removed endpoint: every series gone, its firing alert resolved, no not_found.
    assert not [
        labels for _, labels in after_removal if ("interface_endpoint_id", rejected) in labels
    ]
    assert [
        (alert, state) for alert, state, ident in alert_keys(removal_logs) if ident == rejected
    ] == [
        ("rejected", "firing"),
        ("rejected", "resolved"),
    ]
    (removed,) = events_in(removal_logs, "endpoint_removed")
    assert removed["interface_endpoint_id"] == rejected
    assert (
        value(after_removal, "atlas_interface_endpoint_up", **endpoint_labels(AWS_SERVICE, healthy))
        == 1
    )

    # A failed listing keeps what was found before.
    failures = events_in(failed_logs, "discovery_failed")
    assert failures
    assert {line["group_id"] for line in failures} == {GROUP_ID}
    assert all("429" in line["cause"] for line in failures)
    assert not events_in(failed_logs, "endpoint_removed")
    kept = {
        dict(labels)["interface_endpoint_id"]
        for labels in series(recovered, "atlas_interface_endpoint_info")
    }
    assert kept == {healthy, azure}
    for ident, service in ((healthy, AWS_SERVICE), (azure, AZURE_SERVICE)):
        assert (
            value(recovered, "atlas_interface_endpoint_up", **endpoint_labels(service, ident)) == 1
        )
    assert not [line for line in alert_lines(logs) if line["interface_endpoint_id"] != rejected]


# --- 5. service-account login ----------------------------------------------------------


def with_service_account(settings: Settings, secret: str) -> Settings:
    login = ServiceAccount(CLIENT_ID, SecretStr(secret))
    return dataclasses.replace(settings, credentials=Credentials(login, "the test"))


async def test_a_service_account_logs_in_once_per_cycle_and_renews_an_expired_token(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    sim_clock = FakeClock(1000.0)
    endpoints = [endpoint_id(number) for number in range(1, 7)]
    simulator, atlas_url = await start_simulator(
        Scenario(
            token_lifetime_seconds=120,
            endpoints=[at_atlas(CloudProvider.AWS, AWS_SERVICE, ident) for ident in endpoints],
        ),
        clock=sim_clock,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    settings = with_service_account(
        v2_settings(
            atlas_url,
            endpoints=[entry(CloudProvider.AWS, AWS_SERVICE, ident) for ident in endpoints],
            poll={"concurrency": 8},
        ),
        CLIENT_SECRET,
    )
    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await cycles(daemon, 1)
        logins_after_first_cycle = dict(simulator.stats.token_requests)
        challenges_after_first_cycle = simulator.stats.challenges
        first = await scrape(daemon.url)
        sim_clock.advance(121)  # the token has expired for Atlas
        await cycles(daemon, 2)
        later = await scrape(daemon.url)

    # A whole concurrent cycle on one login, and Bearer accepted (no Digest challenge).
    assert logins_after_first_cycle == {200: 1}
    assert challenges_after_first_cycle == 0
    # Atlas refused the expired token once; the daemon logged in again and went on.
    assert dict(simulator.stats.token_requests) == {200: 2}
    assert simulator.stats.requests[("GET", 401)] >= 1
    reasons = [line["reason"] for line in events_in(logs, "atlas_service_account_login")]
    assert reasons == ["initial", "token rejected"]
    assert not events_in(logs, "endpoint_poll_failed")
    assert not events_in(logs, "endpoint_service_poll_failed")
    for samples in (first, later):
        for ident in endpoints:
            labels = endpoint_labels(AWS_SERVICE, ident)
            assert value(samples, "atlas_interface_endpoint_up", **labels) == 1
        ids = service_labels(CloudProvider.AWS, AWS_SERVICE)
        assert value(samples, "atlas_endpoint_service_up", **ids) == 1
    assert not alert_lines(logs)


async def test_a_wrong_client_secret_fails_polls_naming_the_login_and_never_shows_the_secret(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    wrong_secret = "mdb_sa_sk_wrong-0ddba11"
    ident = endpoint_id(1)
    simulator, atlas_url = await start_simulator(
        Scenario(endpoints=[at_atlas(CloudProvider.AWS, AWS_SERVICE, ident)]),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    settings = with_service_account(
        v2_settings(atlas_url, endpoints=[entry(CloudProvider.AWS, AWS_SERVICE, ident)]),
        wrong_secret,
    )
    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await cycles(daemon, 1)
        text = await scrape_text(daemon.url)

    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert value(samples, "atlas_interface_endpoint_up", **endpoint_labels(AWS_SERVICE, ident)) == 0
    assert (
        value(
            samples, "atlas_endpoint_service_up", **service_labels(CloudProvider.AWS, AWS_SERVICE)
        )
        == 0
    )
    (failed,) = events_in(logs, "endpoint_poll_failed")
    assert "service account login refused" in failed["cause"]
    assert "401" in failed["cause"]
    assert simulator.stats.token_requests[401] >= 1
    assert simulator.stats.token_requests[200] == 0
    assert simulator.stats.total() == 0  # no API request without a token
    for secret in (wrong_secret, CLIENT_SECRET):
        assert secret not in repr(logs)
        assert secret not in text


# --- 6. RateLimit slow-down ------------------------------------------------------------


async def test_the_client_slows_a_project_down_before_atlas_throttles_it(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    """60 requests a minute and 150 endpoints in one project. The simulator's clock runs a
    minute per second, so the bucket refills within the second the client then waits."""
    started = time.monotonic()

    def minute_per_second() -> float:
        return started + (time.monotonic() - started) * 60

    endpoints = [endpoint_id(number) for number in range(1, 151)]
    simulator, atlas_url = await start_simulator(
        Scenario(
            rate_limit_per_minute=60,
            nonce_lifetime_seconds=10**7,
            endpoints=[at_atlas(CloudProvider.AWS, AWS_SERVICE, ident) for ident in endpoints],
        ),
        clock=minute_per_second,
    )

    def throttled_so_far(logger: object, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["throttled_so_far"] = simulator.stats.requests[("GET", 429)]
        return event_dict

    settings = v2_settings(
        atlas_url,
        endpoints=[entry(CloudProvider.AWS, AWS_SERVICE, ident) for ident in endpoints],
        poll={"concurrency": 1, "interval_seconds": 60},
    )
    with capture_logs(processors=[throttled_so_far]) as logs:
        daemon = await start_daemon(settings)
        await cycles(daemon, 1)
        samples = await scrape(daemon.url)

    slowing = events_in(logs, "atlas_project_slowing_down")
    assert slowing
    assert slowing[0]["group_id"] == GROUP_ID
    assert slowing[0]["rate_limit"] == 60
    assert slowing[0]["throttled_so_far"] == 0
    # Requests kept being answered: every endpoint up, none failed.
    for ident in endpoints:
        assert (
            value(samples, "atlas_interface_endpoint_up", **endpoint_labels(AWS_SERVICE, ident))
            == 1
        )
    assert not events_in(logs, "endpoint_poll_failed")
    assert simulator.stats.requests[("GET", 429)] == 0
    assert simulator.stats.requests[("GET", 200)] == len(endpoints) + 1
