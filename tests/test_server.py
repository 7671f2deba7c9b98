"""The daemon over real sockets: simulator, scheduler, HTTP endpoints and alerts together."""

from __future__ import annotations

import asyncio
import contextlib
import gzip

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from monitor import __version__
from monitor.config import ConfigError, EndpointConfig, Settings
from monitor.lifecycle import serve_on_stack
from monitor.providers import ENDPOINT_STATUSES, CloudProvider
from monitor.server import create_app
from monitor.simulator import Fault, Scenario
from tests.helpers import (
    HEALTHY,
    FakeClock,
    StartDaemon,
    StartSimulator,
    alerts_in,
    endpoint_entry,
    endpoint_id,
    events_in,
    fetch,
    ids_of,
    settings_for,
    simulated,
)

REJECTED = endpoint_entry(interface_endpoint_id=endpoint_id(2), name="payments")


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, text = await fetch(f"{url}/metrics")
    assert status == 200
    return scraped(text)


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, **labels: str
) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


async def test_metrics_show_the_state_set_of_every_endpoint(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    simulator, atlas_url = await start_simulator(
        Scenario(endpoints=[simulated(HEALTHY), simulated(REJECTED, status="REJECTED")])
    )
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY, REJECTED]))
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)
    samples = await scrape(daemon.url)

    for entry, current in ((HEALTHY, "AVAILABLE"), (REJECTED, "REJECTED")):
        ids = ids_of(entry)
        for status in ENDPOINT_STATUSES[CloudProvider.AWS]:
            expected = 1 if status.value == current else 0
            assert (
                value(samples, "atlas_interface_endpoint_status", **ids, status=status) == expected
            )
        assert value(samples, "atlas_interface_endpoint_up", **ids) == 1
        assert value(samples, "atlas_interface_endpoint_error", **ids) == 0
        assert value(samples, "atlas_interface_endpoint_delete_requested", **ids) == 0
    info = value(
        samples,
        "atlas_interface_endpoint_info",
        **ids_of(HEALTHY),
        cloud_provider="AWS",
        name="orders",
        env="prod",
    )
    assert info == 1
    assert value(samples, "atlas_monitor_alerts_total", alert="rejected") == 1
    assert value(samples, "atlas_monitor_alerts_total", alert="error_message") == 0
    assert value(samples, "atlas_monitor_endpoints_configured") == 2
    assert value(samples, "atlas_monitor_build_info", version=__version__) == 1
    # One Digest challenge for the life of the session, then one request per poll.
    assert value(samples, "atlas_monitor_api_requests_total", method="GET", code="401") == 1
    assert value(samples, "atlas_monitor_api_requests_total", method="GET", code="200") == 2
    assert value(samples, "atlas_monitor_poll_cycle_duration_seconds_count") == 1

    answered = simulator.stats.total()
    for _ in range(5):
        await scrape(daemon.url)
    assert simulator.stats.total() == answered


async def test_openmetrics_when_asked_for_gzip_when_accepted_and_no_timestamps(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)

    status, content_type, text = await fetch(
        f"{daemon.url}/metrics", Accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.url}/metrics", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: list[Sample] = [
        sample for family in text_string_to_metric_families(text) for sample in family.samples
    ]
    assert samples
    assert all(sample.timestamp is None for sample in samples)


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("identity", False),
        ("gzip;q=0", False),
        ("deflate, br", False),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
    ],
)
async def test_metrics_are_gzipped_exactly_when_the_scraper_accepts_gzip(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    accept_encoding: str,
    gzipped: bool,
) -> None:
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)

    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(
            f"{daemon.url}/metrics", headers={"Accept-Encoding": accept_encoding}
        ) as response,
    ):
        encoding = response.headers.get("Content-Encoding")
        body = await response.read()

    text = (gzip.decompress(body) if gzipped else body).decode()
    assert encoding == ("gzip" if gzipped else None)
    assert value(scraped(text), "atlas_interface_endpoint_up", **ids_of(HEALTHY)) == 1


async def test_readyz_waits_for_the_first_cycle_healthz_does_not(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(seconds: float) -> None:
        entered.set()
        await release.wait()

    _, atlas_url = await start_simulator(
        Scenario(endpoints=[simulated(HEALTHY, faults=[Fault(latency_seconds=1, times=1)])]),
        sleep=held,
    )
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    await asyncio.wait_for(entered.wait(), 10)

    assert (await fetch(f"{daemon.url}/readyz"))[0] == 503
    assert (await fetch(f"{daemon.url}/healthz"))[0] == 200
    samples = await scrape(daemon.url)
    assert value(samples, "atlas_interface_endpoint_up", **ids_of(HEALTHY)) == 0
    assert not any(name == "atlas_interface_endpoint_status" for name, _ in samples)

    release.set()
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)
    assert (await fetch(f"{daemon.url}/readyz"))[0] == 200


async def test_landing_page_links_the_endpoints(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    status, content_type, page = await fetch(f"{daemon.url}/")
    assert status == 200
    assert content_type.startswith("text/html")
    for path in ("/metrics", "/healthz", "/readyz"):
        assert f'href="{path}"' in page


async def test_a_status_flip_resolves_the_alert_on_a_later_cycle(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    simulator, atlas_url = await start_simulator(
        Scenario(endpoints=[simulated(REJECTED, status="REJECTED")])
    )
    settings = settings_for(atlas_url, endpoints=[REJECTED], poll={"interval_seconds": 0.05})
    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(2), 10)
        simulator.set_endpoint(**ids_of(REJECTED), status="AVAILABLE")
        # The cycle running at the flip may have read the old status; the one after cannot.
        flipped_at = daemon.monitor.cycles_completed
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(flipped_at + 2), 10)
        samples = await scrape(daemon.url)
    assert alerts_in(logs) == [
        ("payments", "rejected", "firing"),
        ("payments", "rejected", "resolved"),
    ]
    ids = ids_of(REJECTED)
    assert value(samples, "atlas_interface_endpoint_status", **ids, status="AVAILABLE") == 1
    assert value(samples, "atlas_interface_endpoint_status", **ids, status="REJECTED") == 0


# --- reloading the config (POST /-/reload; SIGHUP is covered in test_cli) ----------------

ADDED = endpoint_entry(interface_endpoint_id=endpoint_id(3), name="search")
SINCE = "atlas_interface_endpoint_status_since_timestamp_seconds"
RELOAD_OK = "atlas_monitor_config_last_reload_successful"
RELOAD_TIME = "atlas_monitor_config_last_reload_success_timestamp_seconds"
EVERY_SECOND = {"interval_seconds": 1, "concurrency": 4}
# POST /-/reload is served only when enabled.
RELOADABLE = {"host": "127.0.0.1", "port": 10479, "enable_reload": True}


class SettingsFile:
    """What the daemon's reload reads: tests swap the settings, or make them invalid."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.problems: list[str] = []

    def load(self) -> Settings:
        if self.problems:
            raise ConfigError(self.problems)
        return self.settings


async def post_reload(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/-/reload") as response:
        return response.status, await response.text()


async def test_a_reload_adds_and_removes_endpoints_and_keeps_the_state_of_the_others(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    _, atlas_url = await start_simulator(
        Scenario(
            endpoints=[simulated(HEALTHY), simulated(REJECTED, status="REJECTED"), simulated(ADDED)]
        )
    )
    clock = FakeClock(1000.0)
    source = SettingsFile(
        settings_for(atlas_url, endpoints=[HEALTHY, REJECTED], poll=EVERY_SECOND, server=RELOADABLE)
    )
    daemon = await start_daemon(source.settings, load=source.load, clock=clock)
    monitor = daemon.monitor
    await asyncio.wait_for(monitor.wait_for_cycles(1), 10)
    kept_before = monitor.state_of(EndpointConfig.model_validate(HEALTHY))

    clock.now = 2000.0
    source.settings = settings_for(
        atlas_url, endpoints=[HEALTHY, ADDED], poll=EVERY_SECOND, server=RELOADABLE
    )
    with capture_logs() as logs:
        status, text = await post_reload(daemon.url)
        cycles = monitor.cycles_completed
        await asyncio.wait_for(monitor.wait_for_cycles(cycles + 1), 10)
    samples = await scrape(daemon.url)

    assert (status, text) == (200, "config reloaded\n")
    assert alerts_in(logs) == [("payments", "rejected", "resolved")]
    assert [line["name"] for line in events_in(logs, "endpoint_removed")] == ["payments"]
    assert [line["name"] for line in events_in(logs, "endpoint_added_to_config")] == ["search"]
    (reloaded,) = events_in(logs, "config_reloaded")
    assert reloaded["polling_restarted"] is False
    assert monitor.state_of(EndpointConfig.model_validate(HEALTHY)) is not None
    assert kept_before is not None
    assert value(samples, SINCE, **ids_of(HEALTHY)) == kept_before.status_since == 1000.0
    assert value(samples, "atlas_interface_endpoint_up", **ids_of(ADDED)) == 1
    assert not [key for key in samples if ("interface_endpoint_id", endpoint_id(2)) in key[1]]
    assert value(samples, "atlas_monitor_endpoints_configured") == 2
    assert value(samples, RELOAD_OK) == 1
    assert value(samples, RELOAD_TIME) == 2000.0


async def test_an_invalid_config_is_refused_and_the_old_one_kept(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    source = SettingsFile(
        settings_for(atlas_url, endpoints=[HEALTHY], poll=EVERY_SECOND, server=RELOADABLE)
    )
    daemon = await start_daemon(source.settings, load=source.load, clock=FakeClock())
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)

    source.problems = ["poll.interval_seconds: must be greater than 0"]
    with capture_logs() as logs:
        status, text = await post_reload(daemon.url)
        cycles = daemon.monitor.cycles_completed
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(cycles + 1), 10)
    samples = await scrape(daemon.url)

    assert status == 500
    assert "poll.interval_seconds: must be greater than 0" in text
    (failed,) = events_in(logs, "config_reload_failed")
    assert failed["problems"] == source.problems
    assert failed["log_level"] == "error"
    assert value(samples, RELOAD_OK) == 0
    assert value(samples, RELOAD_TIME) == 1000.0
    assert value(samples, "atlas_interface_endpoint_up", **ids_of(HEALTHY)) == 1

    source.problems = []
    assert await post_reload(daemon.url) == (200, "config reloaded\n")
    assert value(await scrape(daemon.url), RELOAD_OK) == 1


async def test_a_reload_that_changes_polling_restarts_it_with_the_new_settings(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    simulator, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    source = SettingsFile(settings_for(atlas_url, endpoints=[HEALTHY], server=RELOADABLE))
    daemon = await start_daemon(source.settings, load=source.load)
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)

    source.settings = settings_for(
        atlas_url,
        endpoints=[HEALTHY],
        poll={"interval_seconds": 7},
        server={**RELOADABLE, "port": 1},
    )
    with capture_logs() as logs:
        assert (await post_reload(daemon.url))[0] == 200
        cycles = daemon.monitor.cycles_completed
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(cycles + 1), 10)

    (reloaded,) = events_in(logs, "config_reloaded")
    assert reloaded["polling_restarted"] is True
    (unapplied,) = events_in(logs, "config_reload_needs_restart")
    assert unapplied["sections"] == ["server"]
    samples = await scrape(daemon.url)
    assert value(samples, "atlas_monitor_poll_interval_seconds") == 7
    # A new session: it pays the Digest challenge again, once.
    assert simulator.stats.challenges == 2


async def test_a_reload_from_v1_to_v2_keeps_the_endpoint_and_adds_its_endpoint_service(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    simulator, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    source = SettingsFile(settings_for(atlas_url, endpoints=[HEALTHY], server=RELOADABLE))
    daemon = await start_daemon(source.settings, load=source.load)
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)
    before = await scrape(daemon.url)
    assert not any(name.startswith("atlas_endpoint_service") for name, _ in before)

    source.settings = settings_for(
        atlas_url,
        endpoints=[HEALTHY],
        atlas={"api_version": "v2", "timeout_seconds": 5, "max_retries": 0},
        server=RELOADABLE,
    )
    assert (await post_reload(daemon.url))[0] == 200
    cycles = daemon.monitor.cycles_completed
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(cycles + 1), 10)

    after = await scrape(daemon.url)
    ids = ids_of(HEALTHY)
    service = {
        "group_id": ids["group_id"],
        "private_link_id": ids["private_link_id"],
        "cloud_provider": "AWS",
    }
    assert value(after, "atlas_endpoint_service_status", **service, status="AVAILABLE") == 1
    assert value(after, "atlas_interface_endpoint_status", **ids, status="AVAILABLE") == 1
    # The endpoint kept its state across the switch: its status has not changed since.
    assert value(after, SINCE, **ids) == value(before, SINCE, **ids)
    # A new session for the new API: it pays the Digest challenge again, once.
    assert simulator.stats.challenges == 2


async def test_background_compression_runs_while_the_app_serves_and_stops_with_it(
    start_simulator: StartSimulator,
) -> None:
    _, url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    app = create_app(settings_for(url, endpoints=[HEALTHY]))

    def compressing() -> list[asyncio.Task[object]]:
        return [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "MonitorMetrics.keep_compressed"
        ]

    async with contextlib.AsyncExitStack() as served:
        await serve_on_stack(served, app, "127.0.0.1", 0)
        running = compressing()
        assert len(running) == 1
        assert not running[0].done()
    assert running[0].cancelled()
    assert compressing() == []


async def read_response_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The status line and headers (names lower-cased) of the next response on ``reader``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, field = line.partition(":")
        headers[name.strip().lower()] = field.strip()
    return status_line, headers


async def test_head_metrics_sends_headers_only_and_keeps_a_pipelined_connection_in_step(
    start_simulator: StartSimulator, start_daemon: StartDaemon
) -> None:
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(HEALTHY)]))
    daemon = await start_daemon(settings_for(atlas_url, endpoints=[HEALTHY]))
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)
    body = (await fetch(f"{daemon.url}/metrics"))[2]
    host, port = daemon.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"HEAD /metrics HTTP/1.1\r\nHost: monitor\r\n\r\n"
            b"HEAD /metrics HTTP/1.1\r\nHost: monitor\r\nAccept-Encoding: gzip\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: monitor\r\n\r\n"
        )
        await writer.drain()
        head_status, head_headers = await read_response_head(reader)
        gzip_status, gzip_headers = await read_response_head(reader)
        get_status, get_headers = await read_response_head(reader)
        healthz = await asyncio.wait_for(reader.readexactly(int(get_headers["content-length"])), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert head_status == "HTTP/1.1 200 OK"
    assert head_headers["content-type"].startswith("text/plain")
    # Within the few bytes an uncompressed scrape of one endpoint may differ by (timestamps).
    assert abs(int(head_headers["content-length"]) - len(body.encode())) < 200
    assert gzip_status == "HTTP/1.1 200 OK"
    assert gzip_headers["content-encoding"] == "gzip"
    assert 0 < int(gzip_headers["content-length"]) < int(head_headers["content-length"])
    assert get_status == "HTTP/1.1 200 OK"
    assert healthz == b"ok\n"
