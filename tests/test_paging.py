"""From a REJECTED endpoint to a notification, with the real components end to end.

The in-repo simulator plays Atlas; two monitor processes (`run`, as child processes) watch
the same endpoint, as two replicas would; Debian's Prometheus scrapes both and evaluates the
shipped rules; Debian's Alertmanager runs the shipped config, derived only in its timings
and webhook URL; and a webhook receiver in this test records every notification.

Absence can only be observed over a window. Where a test asserts that nothing (more)
arrived, it first awaits what would cause a stray notification (Prometheus' evaluation
after a kill; the resolution in Prometheus), and then watches the webhook for three of
Alertmanager's group intervals, more than it takes to flush a group. In the first test a
stray notification caused by the kill would also have to arrive before the resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from monitor.lifecycle import serve_on_stack
from monitor.simulator import Scenario
from tests.helpers import (
    ALERTMANAGER_CONFIG,
    DATA_TIMEOUT_SECONDS,
    RULES_FILE,
    Process,
    StartSimulator,
    deployment_tool,
    endpoint_entry,
    endpoint_id,
    flushes_clear_of_evaluations,
    ids_of,
    run_daemon,
    running_prometheus,
    scrape_config,
    simulated,
    subprocess_env,
    wait_for_alert,
    wait_for_data,
)

ENDPOINT = endpoint_entry(interface_endpoint_id=endpoint_id(42), name="payments-prod")
ATLAS_MESSAGE = "The VPC endpoint service rejected the connection\nrequest\t(vpce-042)."
ATLAS_MESSAGE_LABEL = "The VPC endpoint service rejected the connection request (vpce-042)."
EVALUATION_INTERVAL = "1s"
GROUP_INTERVAL_SECONDS = 2
# Only the shipped config's timings change, so a test run takes seconds, not minutes; as
# there, group_wait keeps the group's flushes half-way between evaluations.
ALERTMANAGER_TIMINGS = {
    "group_wait": "1s500ms",
    "group_interval": f"{GROUP_INTERVAL_SECONDS}s",
    "repeat_interval": "1h",
}
ENDPOINT_ALERTS = {"AtlasEndpointRejected", "AtlasEndpointErrorMessage"}
MONITOR_IDENTITY = {"job", "instance", "pod"}


@dataclass
class Webhook:
    """The receiving end of Alertmanager's webhook_configs: every payload, in order."""

    url: str = ""
    payloads: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def receive(self, request: web.Request) -> web.Response:
        payload = await request.json()
        async with self.arrived:
            self.payloads.append(payload)
            self.arrived.notify_all()
        return web.Response()

    async def wait_for(self, count: int) -> None:
        """Until ``count`` payloads have arrived; fails naming what did arrive."""
        timeout = DATA_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout(timeout), self.arrived:
                await self.arrived.wait_for(lambda: len(self.payloads) >= count)
        except TimeoutError:
            raise AssertionError(
                f"{len(self.payloads)} of {count} notifications within {timeout} s: {self.payloads}"
            ) from None

    async def nothing_more(self, window: float) -> None:
        """Assert no further payload arrives within ``window`` seconds."""
        seen = len(self.payloads)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(window), self.arrived:
                await self.arrived.wait_for(lambda: len(self.payloads) > seen)
        assert self.payloads[seen:] == [], "unexpected notification"


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    receiver = Webhook()
    app = web.Application()
    app.router.add_post("/atlas-endpoint-monitor", receiver.receive)
    async with contextlib.AsyncExitStack() as served:
        receiver.url = f"{await serve_on_stack(served, app, '127.0.0.1', 0)}/atlas-endpoint-monitor"
        yield receiver


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped config with ALERTMANAGER_TIMINGS and the webhook receiver's URL: the
    same routes, grouping, inhibitions and receivers."""
    document: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())

    def shorten(route: dict[str, Any]) -> None:
        for key, value in ALERTMANAGER_TIMINGS.items():
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(document["route"])
    (webhook,) = [
        config
        for receiver in document["receivers"]
        for config in receiver.get("webhook_configs", [])
    ]
    webhook["url"] = webhook_url
    return document


@contextlib.asynccontextmanager
async def running_alertmanager(document: dict[str, Any], directory: Path) -> AsyncIterator[str]:
    """Alertmanager on a port of its choosing on 127.0.0.1, without its cluster listener,
    until the block ends; yields its base URL once it listens."""
    config = directory / "alertmanager.yml"
    config.write_text(yaml.safe_dump(document))
    process = Process(
        [
            f"--config.file={config}",
            f"--storage.path={directory / 'data'}",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
        ],
        subprocess_env(),
        program=[deployment_tool("prometheus-alertmanager", "prometheus-alertmanager")],
    )
    try:
        line = await asyncio.to_thread(process.wait_for_line, lambda text: "Listening on" in text)
        address = re.search(r"address=(127\.0\.0\.1:\d+)", line)
        assert address, line
        yield f"http://{address.group(1)}"
    finally:
        await asyncio.to_thread(process.stop)


@dataclass
class Paging:
    simulator_ids: dict[str, str]
    set_status: Callable[..., None]
    daemons: list[tuple[Process, str]]
    prometheus: str
    alertmanager: str
    webhook: Webhook


@pytest.fixture
async def paging(
    start_simulator: StartSimulator,
    children: Callable[..., Process],
    prometheus_binary: str,
    webhook: Webhook,
    tmp_path: Path,
) -> AsyncIterator[Paging]:
    simulator, atlas_url = await start_simulator(
        Scenario(endpoints=[simulated(ENDPOINT, status="AVAILABLE")])
    )
    daemons = []
    for replica in ("a", "b"):
        directory = tmp_path / replica
        directory.mkdir()
        daemons.append(
            await asyncio.to_thread(
                run_daemon,
                directory,
                children,
                atlas_url,
                endpoints=[ENDPOINT],
                atlas={"timeout_seconds": 5, "max_retries": 0},
                poll={"interval_seconds": 1, "max_requests_per_minute": None},
            )
        )
    alertmanager_dir = tmp_path / "alertmanager"
    alertmanager_dir.mkdir()
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    async with running_alertmanager(
        alertmanager_config(webhook.url), alertmanager_dir
    ) as alertmanager:
        document = {
            "global": {"scrape_interval": "1s", "evaluation_interval": EVALUATION_INTERVAL},
            "rule_files": [str(RULES_FILE)],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
                ]
            },
            "scrape_configs": [scrape_config([url.removeprefix("http://") for _, url in daemons])],
        }
        async with running_prometheus(prometheus_binary, document, prometheus_dir) as prometheus:
            yield Paging(
                ids_of(ENDPOINT),
                simulator.set_endpoint,
                daemons,
                prometheus,
                alertmanager,
                webhook,
            )


def test_the_shortened_timings_keep_flushes_clear_of_evaluations_as_the_shipped_ones() -> None:
    """Otherwise the resolutions of one evaluation may reach the webhook as two payloads."""
    assert flushes_clear_of_evaluations(
        ALERTMANAGER_TIMINGS["group_wait"],
        ALERTMANAGER_TIMINGS["group_interval"],
        EVALUATION_INTERVAL,
    )


async def firing_alerts(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    """Prometheus' firing endpoint alerts."""
    async with session.get(f"{base}/api/v1/alerts") as response:
        alerts = (await response.json())["data"]["alerts"]
    return [
        alert
        for alert in alerts
        if alert["labels"]["alertname"] in ENDPOINT_ALERTS and alert["state"] == "firing"
    ]


async def evaluated_after(session: aiohttp.ClientSession, base: str, moment: float) -> None:
    """Until Prometheus has evaluated the rules at least once more, starting after ``moment``."""
    deadline = time.monotonic() + DATA_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        async with session.get(f"{base}/api/v1/rules") as response:
            (group,) = (await response.json())["data"]["groups"]
        last = datetime.fromisoformat(group["lastEvaluation"]).timestamp()
        if last > moment:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no rule evaluation after {moment} within {DATA_TIMEOUT_SECONDS} s")


def alerts_of(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {alert["labels"]["alertname"]: alert for alert in payload["alerts"]}


async def test_rejected_pages_once_and_resolves_once_with_two_monitors_one_killed(
    paging: Paging,
) -> None:
    webhook = paging.webhook
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        # Both processes see the endpoint before it changes.
        await wait_for_data(
            session,
            paging.prometheus,
            {"both see it": 'count(atlas_interface_endpoint_status{status="AVAILABLE"} == 1) == 2'},
        )

        paging.set_status(**paging.simulator_ids, status="REJECTED", error_message=ATLAS_MESSAGE)
        await webhook.wait_for(1)
        await wait_for_data(
            session,
            paging.prometheus,
            {"both see it": 'count(atlas_interface_endpoint_status{status="REJECTED"} == 1) == 2'},
        )
        rejected = await wait_for_alert(session, paging.prometheus, "AtlasEndpointRejected")
        before_kill = await firing_alerts(session, paging.prometheus)

        # One of the two processes dies (kill -9); Prometheus notices, evaluates again, and
        # the alerts go on unchanged.
        victim, victim_url = paging.daemons[1]
        victim.kill()
        instance = victim_url.removeprefix("http://")
        await wait_for_data(
            session, paging.prometheus, {"down": f'up{{instance="{instance}"}} == 0'}
        )
        await evaluated_after(session, paging.prometheus, time.time())
        after_kill = await firing_alerts(session, paging.prometheus)

        paging.set_status(**paging.simulator_ids, status="AVAILABLE")
        await webhook.wait_for(2)
        await webhook.nothing_more(3 * GROUP_INTERVAL_SECONDS)

    # Two processes, one alert per condition, without the monitor's identity.
    assert sorted(alert["labels"]["alertname"] for alert in before_kill) == sorted(ENDPOINT_ALERTS)
    assert not MONITOR_IDENTITY & rejected["labels"].keys()
    assert after_kill == before_kill

    firing, resolved = webhook.payloads
    assert firing["status"] == "firing"
    assert firing["receiver"] == "webhook"
    assert firing["groupLabels"] == paging.simulator_ids
    assert alerts_of(firing).keys() == ENDPOINT_ALERTS
    page = alerts_of(firing)["AtlasEndpointRejected"]
    assert page["status"] == "firing"
    assert page["labels"] == {
        "alertname": "AtlasEndpointRejected",
        "severity": "critical",
        "status": "REJECTED",
        "name": "payments-prod",
        "cloud_provider": "AWS",
        **paging.simulator_ids,
    }
    assert page["annotations"]["atlas_error_message"] == ATLAS_MESSAGE_LABEL
    assert page["annotations"]["runbook_url"].endswith(
        "docs/alerts-runbook.md#atlasendpointrejected"
    )
    assert "payments-prod" in page["annotations"]["summary"]

    assert resolved["status"] == "resolved"
    assert resolved["groupLabels"] == paging.simulator_ids
    assert alerts_of(resolved).keys() == ENDPOINT_ALERTS
    assert all(alert["status"] == "resolved" for alert in resolved["alerts"])
    assert alerts_of(resolved)["AtlasEndpointRejected"]["labels"] == page["labels"]
    assert alerts_of(resolved)["AtlasEndpointRejected"]["startsAt"] == page["startsAt"]


async def receivers_of(session: aiohttp.ClientSession, base: str, alertname: str) -> list[str]:
    """The receivers Alertmanager routes its active alert ``alertname`` to, once it has it."""
    deadline = time.monotonic() + DATA_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        params = {"filter": f'alertname="{alertname}"'}
        async with session.get(f"{base}/api/v2/alerts", params=params) as response:
            alerts = await response.json()
        if alerts:
            return [receiver["name"] for alert in alerts for receiver in alert["receivers"]]
        await asyncio.sleep(0.2)
    raise AssertionError(f"Alertmanager has no {alertname} within {DATA_TIMEOUT_SECONDS} s")


async def test_with_no_process_polling_a_firing_endpoint_alert_does_not_resolve_on_the_pager(
    paging: Paging,
) -> None:
    webhook = paging.webhook
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        paging.set_status(**paging.simulator_ids, status="REJECTED")
        await webhook.wait_for(1)
        await wait_for_data(
            session,
            paging.prometheus,
            {"both see it": 'count(atlas_interface_endpoint_status{status="REJECTED"} == 1) == 2'},
        )

        for process, _ in paging.daemons:
            process.kill()
        await wait_for_alert(session, paging.prometheus, "AtlasMonitorBlind")
        receivers = await receivers_of(session, paging.alertmanager, "AtlasMonitorBlind")
        resolved = 'absent(ALERTS{alertname="AtlasEndpointRejected", alertstate="firing"})'
        await wait_for_data(session, paging.prometheus, {"resolved in Prometheus": resolved})
        await webhook.nothing_more(3 * GROUP_INTERVAL_SECONDS)

    assert receivers == ["null"]
    (firing,) = webhook.payloads
    assert firing["status"] == "firing"
    assert alerts_of(firing).keys() == {"AtlasEndpointRejected"}
