"""The shipped Alertmanager config: valid for amtool, its commented receivers valid once
uncommented, and its routes and inhibitions in step with the alerting rules.

amtool comes with Debian's `prometheus-alertmanager` package, which CI's .ci/run installs;
there a missing amtool fails these tests (see ``deployment_tool``). tests/test_paging.py
runs the same file in a real Alertmanager.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_DIR,
    alerting_rules,
    flushes_clear_of_evaluations,
    load_yaml,
    run_tool,
)

EXAMPLE_RECEIVERS = ("slack", "pagerduty")
ENDPOINT_IDS = ["group_id", "private_link_id", "interface_endpoint_id"]
# Prometheus' default (1m), the shipped prometheus.yml's (15s), the Prometheus Operator's
# default (30s), and shorter ones people choose.
EVALUATION_INTERVALS = ("5s", "10s", "15s", "30s", "1m")
TIMINGS = ("group_wait", "group_interval")


def run_amtool(*args: str) -> str:
    """Run amtool, assert it succeeded, and return its standard output."""
    return run_tool("amtool", "prometheus-alertmanager", *args, timeout=60).stdout


def uncommented(text: str, receiver: str) -> str:
    """``text`` with the commented-out example receiver ``receiver`` uncommented: its
    ``# - name:`` line and the ``#   `` lines under it, as a user would uncomment them."""
    lines = text.splitlines(keepends=True)
    start = next(number for number, line in enumerate(lines) if line == f"  # - name: {receiver}\n")
    end = start + 1
    while end < len(lines) and lines[end].startswith("  #   "):
        end += 1
    example = [line.replace("# ", "", 1) for line in lines[start:end]]
    return "".join([*lines[:start], *example, *lines[end:]])


def route_of(config: Path, **labels: str) -> str:
    pairs = [f"{name}={value}" for name, value in labels.items()]
    return run_amtool("config", "routes", "test", f"--config.file={config}", *pairs).strip()


def test_the_shipped_config_is_valid() -> None:
    output = run_amtool("check-config", str(ALERTMANAGER_CONFIG))

    assert "SUCCESS" in output


@pytest.mark.parametrize("receiver", EXAMPLE_RECEIVERS)
def test_each_commented_receiver_is_valid_once_uncommented_and_used(
    receiver: str, tmp_path: Path
) -> None:
    text = uncommented(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"), receiver)
    text = text.replace("  receiver: webhook\n", f"  receiver: {receiver}\n", 1)
    config = tmp_path / "alertmanager.yml"
    config.write_text(text, encoding="utf-8")

    run_amtool("check-config", str(config))

    document = load_yaml(config)
    (example,) = [entry for entry in document["receivers"] if entry["name"] == receiver]
    assert len(example) > 1, f"{receiver}: only its name was uncommented"
    assert route_of(config, alertname="AtlasEndpointRejected", severity="critical") == receiver


def templates_in(value: Any) -> list[str]:
    """Every string holding a Go template in a receiver's config, however deep."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in templates_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in templates_in(item)]
    return [value] if isinstance(value, str) and "{{" in value else []


@pytest.mark.parametrize("receiver", EXAMPLE_RECEIVERS)
def test_each_commented_receiver_renders_its_templates(receiver: str, tmp_path: Path) -> None:
    # check-config does not execute notification templates; amtool renders them against
    # its example alerts, which fails on a misspelt function or a bad pipeline.
    document = yaml.safe_load(
        uncommented(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"), receiver)
    )
    (example,) = [entry for entry in document["receivers"] if entry["name"] == receiver]
    no_template_files = tmp_path / "none.tmpl"
    no_template_files.write_text("", encoding="utf-8")
    templates = templates_in(example)

    assert templates, receiver
    for template in templates:
        run_amtool(
            "template",
            "render",
            f"--template.glob={no_template_files}",
            f"--template.text={template}",
        )


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "AtlasEndpointRejected", "severity": "critical"}, "webhook"),
        ({"alertname": "AtlasEndpointUnreachable", "severity": "warning"}, "webhook"),
        ({"alertname": "AtlasMonitorDown", "severity": "critical"}, "webhook"),
        ({"alertname": "AtlasMonitorBlind", "severity": "none"}, "null"),
    ],
)
def test_alerts_reach_the_webhook_and_the_inhibition_source_nobody(
    labels: dict[str, str], receiver: str
) -> None:
    assert route_of(ALERTMANAGER_CONFIG, **labels) == receiver


def test_endpoint_alerts_are_grouped_by_the_endpoint_ids_the_rules_keep() -> None:
    route = load_yaml(ALERTMANAGER_CONFIG)["route"]

    assert route["group_by"] == ENDPOINT_IDS
    for rule in alerting_rules():
        if "atlas_interface_endpoint_info" in rule["expr"]:
            aggregation = f"max by ({', '.join(ENDPOINT_IDS)}"
            assert aggregation in rule["expr"], rule["alert"]


def route_timings(
    route: dict[str, Any], inherited: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """(group_wait, group_interval) of every route in the tree, as each inherits them."""
    timings = {**(inherited or {}), **{key: route[key] for key in TIMINGS if key in route}}
    own = [(timings["group_wait"], timings["group_interval"])]
    children = route.get("routes", [])
    return own + [pair for child in children for pair in route_timings(child, timings)]


def test_the_shipped_prometheus_evaluates_at_an_interval_the_timings_are_checked_for() -> None:
    prometheus = load_yaml(PROMETHEUS_DIR / "prometheus.yml")

    assert prometheus["global"]["evaluation_interval"] in EVALUATION_INTERVALS


@pytest.mark.parametrize("evaluation", EVALUATION_INTERVALS)
def test_no_flush_splits_the_alerts_of_one_evaluation(evaluation: str) -> None:
    """REJECTED and its errorMessage resolve in one evaluation, but Prometheus sends them
    rule by rule: a group flushing just then would send two notifications."""
    timings = route_timings(load_yaml(ALERTMANAGER_CONFIG)["route"])

    for group_wait, group_interval in timings:
        assert flushes_clear_of_evaluations(group_wait, group_interval, evaluation), timings


def inhibitions() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = load_yaml(ALERTMANAGER_CONFIG)["inhibit_rules"]
    return rules


def matcher_regex(matchers: list[str]) -> re.Pattern[str]:
    (matcher,) = matchers
    found = re.fullmatch(r'alertname=~?"(.+)"', matcher)
    assert found, matcher
    return re.compile(found.group(1))


def test_no_monitor_polling_inhibits_every_endpoint_alert_and_no_monitor_alert() -> None:
    (blind,) = [rule for rule in inhibitions() if "AtlasMonitorBlind" in str(rule)]
    target = matcher_regex(blind["target_matchers"])
    names = {rule["alert"] for rule in alerting_rules()}
    endpoint_alerts = {name for name in names if name.startswith("AtlasEndpoint")}

    assert endpoint_alerts
    assert {name for name in names if target.fullmatch(name)} == endpoint_alerts
    assert "equal" not in blind


def test_every_inhibition_names_alerts_that_exist() -> None:
    names = {rule["alert"] for rule in alerting_rules()}

    for rule in inhibitions():
        for side in ("source_matchers", "target_matchers"):
            pattern = matcher_regex(rule[side])
            assert any(pattern.fullmatch(name) for name in names), (side, rule)
