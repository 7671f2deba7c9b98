"""The shipped dashboard and alert rules against a real Prometheus scraping a real daemon.

Prometheus (Debian's package; .ci/run installs it) runs as a child process on 127.0.0.1
with a throwaway config and data dir, scraping the daemon every second and evaluating the
repo's rule file. The simulator is scripted so that every rule's condition really holds:
an expression that is misspelt, names a metric the daemon does not export, or joins on the
wrong labels returns nothing and fails here.

Two daemons share the simulator, as two monitors of one fleet would: one on the Atlas API
v1.0 (the default; AWS only) and one on v2 with Azure and GCP endpoints and their endpoint
services, which only v2 exports.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from monitor.simulator import Fault, Scenario, ScenarioEndpoint, ScenarioService, Simulator
from tests.helpers import (
    JOB,
    PRIVATE_LINK_ID,
    REPO,
    RULES_FILE,
    RunningDaemon,
    StartDaemon,
    StartSimulator,
    endpoint_entry,
    endpoint_id,
    ids_of,
    query,
    running_prometheus,
    scrape_config,
    settings_for,
    simulated,
    unused_port,
    wait_for_alert,
    wait_for_data,
)

DASHBOARD = REPO / "grafana/dashboards/atlas-endpoint-monitor.json"
# What Grafana would put in place of the dashboard's variables, with every endpoint selected.
GRAFANA_VARIABLES = {
    "job": JOB,
    "group_id": ".*",
    "cloud_provider": ".*",
    "label": "name",
    "label_value": ".*",
    "__rate_interval": "1m",
    "__interval": "1s",
    "__range": "5m",
}
# Grafana's variable query functions: label_values([selector,] label) and label_names(selector).
VARIABLE_QUERY = re.compile(
    r"^(?:label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)"
    r"|label_names\((?P<names_of>.+)\))$"
)

HEALTHY = endpoint_entry(interface_endpoint_id=endpoint_id(1), name="healthy")
REJECTED = endpoint_entry(interface_endpoint_id=endpoint_id(2), name="rejected")
BROKEN = endpoint_entry(interface_endpoint_id=endpoint_id(3), name="broken")
PENDING = endpoint_entry(interface_endpoint_id=endpoint_id(4), name="pending")
MISSING = endpoint_entry(interface_endpoint_id=endpoint_id(5), name="missing")
FAILING = endpoint_entry(interface_endpoint_id=endpoint_id(6), name="failing")
THROTTLED = endpoint_entry(interface_endpoint_id=endpoint_id(7), name="throttled")
FORBIDDEN = endpoint_entry(interface_endpoint_id=endpoint_id(8), name="forbidden")
ENDPOINTS = [HEALTHY, REJECTED, BROKEN, PENDING, MISSING, FAILING, THROTTLED, FORBIDDEN]

# The v2 daemon's endpoints: one endpoint service per provider (the AWS one is the v1.0
# endpoints' private link, which Atlas lists as an AWS endpoint service in v2).
AZURE_SERVICE_ID = "65a1b2c3d4e5f60718293a5b"
GCP_SERVICE_ID = "65a1b2c3d4e5f60718293a5c"
AZURE_ID = (
    "/subscriptions/0f7e2d1c-3b4a-4c5d-8e9f-a0b1c2d3e4f5/resourceGroups/payments-rg"
    "/providers/Microsoft.Network/privateEndpoints/{name}"
)
AWS_V2 = endpoint_entry(interface_endpoint_id=endpoint_id(9), name="aws-v2")
AZURE_HEALTHY = endpoint_entry(
    private_link_id=AZURE_SERVICE_ID,
    cloud_provider="AZURE",
    interface_endpoint_id=AZURE_ID.format(name="payments-pe"),
    name="azure-healthy",
)
AZURE_FAILED = endpoint_entry(
    private_link_id=AZURE_SERVICE_ID,
    cloud_provider="AZURE",
    interface_endpoint_id=AZURE_ID.format(name="billing-pe"),
    name="azure-failed",
)
GCP_VERIFIED = endpoint_entry(
    private_link_id=GCP_SERVICE_ID,
    cloud_provider="GCP",
    interface_endpoint_id="analytics-psc",
    name="gcp-verified",
)
V2_ENDPOINTS = [AWS_V2, AZURE_HEALTHY, AZURE_FAILED, GCP_VERIFIED]
SERVICE_ERROR = "Private Service Connect quota exceeded in region CENTRAL_US"


def expand(expression: str) -> str:
    def value(match: re.Match[str]) -> str:
        return GRAFANA_VARIABLES[match.group(1) or match.group(2)]

    expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expression)
    assert "$" not in expanded, expression
    return expanded


def dashboard_expressions() -> dict[str, str]:
    """Panel title (and legend) -> PromQL, for every target of every panel, rows included."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = {}

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard["panels"]):
        for target in panel.get("targets", []):
            label = f"panel {panel['title']!r} {target.get('refId', '')}".strip()
            expressions[label] = expand(target["expr"])
    return expressions


def variable_queries() -> dict[str, re.Match[str]]:
    """Template variable -> its parsed ``label_values`` or ``label_names`` query."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = VARIABLE_QUERY.match(expand(text).strip())
        assert match, f"variable {variable['name']}: {text!r} is not label_values/label_names"
        queries[variable["name"]] = match
    return queries


def rule_expressions() -> dict[str, str]:
    rules = yaml.safe_load(RULES_FILE.read_text())
    return {
        f"rule {rule['alert']}": rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def simulated_v2(entry: dict[str, Any], **state: Any) -> ScenarioEndpoint:
    """``simulated`` for an endpoint of any provider."""
    return simulated(entry, cloud_provider=entry.get("cloud_provider", "AWS"), **state)


@dataclass
class Stack:
    simulator: Simulator
    daemon: RunningDaemon
    v2_daemon: RunningDaemon

    def targets(self) -> list[str]:
        return [self.daemon.url.removeprefix("http://"), self.v2_daemon.url.removeprefix("http://")]


@pytest.fixture
async def stack(start_simulator: StartSimulator, start_daemon: StartDaemon) -> Stack:
    """A daemon whose endpoints make every rule's condition true within a few cycles."""
    forever_500 = Fault(methods=["GET"], status=500)
    forever_429 = Fault(methods=["GET"], status=429, retry_after=1)
    forever_403 = Fault(methods=["GET"], status=403, error_code="IP_ADDRESS_NOT_ON_ACCESS_LIST")
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(HEALTHY, status="AVAILABLE"),
                simulated(REJECTED, status="REJECTED"),
                simulated(BROKEN, status="AVAILABLE", error_message="no subnet in use1-az3"),
                simulated(PENDING, status="PENDING_ACCEPTANCE"),
                simulated(MISSING, exists=False),
                simulated(FAILING, status="AVAILABLE", faults=[forever_500]),
                simulated(THROTTLED, status="AVAILABLE", faults=[forever_429]),
                simulated(FORBIDDEN, status="AVAILABLE", faults=[forever_403]),
                simulated_v2(AWS_V2, status="AVAILABLE"),
                simulated_v2(AZURE_HEALTHY, status="AVAILABLE"),
                simulated_v2(AZURE_FAILED, status="FAILED"),
                simulated_v2(GCP_VERIFIED, status="VERIFIED"),
            ],
            endpoint_services=[
                ScenarioService(
                    group_id=HEALTHY["group_id"],
                    id=PRIVATE_LINK_ID,
                    cloud_provider="AWS",
                    region="US_EAST_1",
                ),
                ScenarioService(
                    group_id=HEALTHY["group_id"],
                    id=AZURE_SERVICE_ID,
                    cloud_provider="AZURE",
                    region="US_EAST_2",
                ),
                ScenarioService(
                    group_id=HEALTHY["group_id"],
                    id=GCP_SERVICE_ID,
                    cloud_provider="GCP",
                    region="CENTRAL_US",
                    status="FAILED",
                    error_message=SERVICE_ERROR,
                ),
            ],
        )
    )
    settings = settings_for(
        url,
        endpoints=ENDPOINTS,
        atlas={"timeout_seconds": 15, "max_retries": 0},
        poll={"interval_seconds": 1, "concurrency": 4},
        alerts={"unreachable_after_failures": 1, "stuck_after_seconds": 1},
    )
    v2_settings = settings_for(
        url,
        endpoints=V2_ENDPOINTS,
        atlas={"api_version": "v2", "timeout_seconds": 15, "max_retries": 0},
        poll={"interval_seconds": 1, "concurrency": 4},
        alerts={"unreachable_after_failures": 1, "stuck_after_seconds": 1},
    )
    return Stack(simulator, await start_daemon(settings), await start_daemon(v2_settings))


@pytest.fixture
async def prometheus(prometheus_binary: str, stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    """Prometheus scraping the daemons, plus a target nobody serves (a monitor that is down)."""
    document = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [scrape_config([*stack.targets(), f"127.0.0.1:{unused_port()}"])],
    }
    async with running_prometheus(prometheus_binary, document, tmp_path) as url:
        yield url


async def test_every_dashboard_and_rule_query_returns_data_and_the_endpoint_rules_fire(
    prometheus: str, stack: Stack
) -> None:
    expressions = {**dashboard_expressions(), **rule_expressions()}
    stale = expressions.pop("rule AtlasMonitorStale")
    # Silent while any daemon polls, as here; tests/test_paging.py sees it fire.
    expressions.pop("rule AtlasMonitorBlind")
    # The monitor's own host failing it (no descriptors, a dead stdout, an unusable state
    # file) cannot be staged in this stack; promtool's unit tests cover these rules, and
    # tests/test_lifecycle.py and tests/test_statestore.py the metrics they read.
    for own_failure in ("LocalResourceErrors", "LogWritesFailing", "StateStoreDown"):
        expressions.pop(f"rule AtlasMonitor{own_failure}")
    variables = variable_queries()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        answered = await wait_for_data(session, prometheus, expressions)
        options = {
            name: await variable_options(session, prometheus, variable)
            for name, variable in variables.items()
        }
        firing = await wait_for_alert(session, prometheus, "AtlasEndpointRejected")
        failed = await wait_for_alert(session, prometheus, "AtlasEndpointFailed")
        service_failed = await wait_for_alert(session, prometheus, "AtlasEndpointServiceFailed")
        # The daemon's stuck alert covers GCP's VERIFIED as well as AWS' PENDING_ACCEPTANCE
        # (the rule's first answer may hold only the one that got stuck first).
        stuck_gcp = await wait_for_data(
            session,
            prometheus,
            {"stuck GCP": 'ALERTS{alertname="AtlasEndpointStuckPending", cloud_provider="GCP"}'},
        )

        # Stale last: one answer slower than 3 poll intervals holds up the cycle, so the
        # last-cycle timestamp stops moving while /metrics keeps being served.
        slow = Fault(methods=["GET"], latency_seconds=10, times=1)
        stack.simulator.add_fault(**ids_of(HEALTHY), fault=slow)
        await wait_for_data(session, prometheus, {"rule AtlasMonitorStale": stale})

    for name, offered in options.items():
        assert offered, name
    assert options["cloud_provider"] == {"AWS", "AZURE", "GCP"}

    rejected_names = {item["metric"].get("name") for item in answered["rule AtlasEndpointRejected"]}
    assert rejected_names == {"rejected"}
    assert firing["labels"]["interface_endpoint_id"] == REJECTED["interface_endpoint_id"]
    assert firing["labels"]["severity"] == "critical"
    assert firing["labels"]["cloud_provider"] == "AWS"

    assert names_in(answered["rule AtlasEndpointFailed"]) == {("azure-failed", "AZURE")}
    assert failed["labels"]["interface_endpoint_id"] == AZURE_FAILED["interface_endpoint_id"]
    assert failed["labels"]["severity"] == "critical"
    assert names_in(answered["rule AtlasEndpointStuckPending"]) <= {
        ("pending", "AWS"),
        ("gcp-verified", "GCP"),
    }
    assert names_in(stuck_gcp["stuck GCP"]) == {("gcp-verified", "GCP")}
    for rule in ("AtlasEndpointServiceFailed", "AtlasEndpointServiceErrorMessage"):
        (service,) = answered[f"rule {rule}"]
        assert service["metric"]["private_link_id"] == GCP_SERVICE_ID, rule
        assert service["metric"]["cloud_provider"] == "GCP", rule
        assert service["metric"]["region"] == "CENTRAL_US", rule
    assert service_failed["labels"]["severity"] == "critical"
    assert service_failed["labels"]["private_link_id"] == GCP_SERVICE_ID

    down = answered["rule AtlasMonitorDown"]
    assert not set(stack.targets()) & {item["metric"]["instance"] for item in down}


def names_in(result: list[Any]) -> set[tuple[str, str]]:
    """(name, cloud_provider) of every series of a per-endpoint rule's result."""
    return {(item["metric"]["name"], item["metric"]["cloud_provider"]) for item in result}


async def variable_options(
    session: aiohttp.ClientSession, base: str, variable: re.Match[str]
) -> set[str]:
    """What Grafana would offer in the variable's drop-down."""
    if variable["names_of"]:
        params = {"match[]": variable["names_of"]}
        async with session.get(f"{base}/api/v1/labels", params=params) as response:
            return set((await response.json())["data"])
    selector = variable["selector"] or "{__name__=~'.+'}"
    series = await query(session, base, selector)
    return {
        item["metric"][variable["label"]] for item in series if variable["label"] in item["metric"]
    }
