"""The shipped Prometheus config, alerting rules and their promtool unit tests stay valid.

promtool comes with Debian's `prometheus` package, which CI's .ci/run installs; there a
missing promtool fails these tests (see ``deployment_tool``).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from pathlib import Path

from tests.helpers import (
    PROMETHEUS_DIR,
    REPO,
    RULES_DIR,
    RULES_FILE,
    alerting_rules,
    load_yaml,
    run_promtool,
)

CONFIG_FILE = PROMETHEUS_DIR / "prometheus.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "tests" / "atlas-endpoint-monitor.test.yml"

# Where docker compose mounts RULES_DIR inside the Prometheus container.
CONTAINER_RULES_GLOB = "/etc/prometheus/rules/*.yml"
RUNBOOK = "https://github.com/atlas-endpoint-monitor/atlas-endpoint-monitor/blob/main/docs/alerts-runbook.md#"
SEVERITIES = {"critical", "warning", "none"}
ENDPOINT_ID_LABELS = ("group_id", "private_link_id", "interface_endpoint_id", "name")


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    # rule_files holds the rules' path inside the container, which does not exist here.
    # `promtool check config` (2.42) passes a glob that matches nothing and then checks no
    # rules at all, so checking the file as shipped would prove little. Check a copy that is
    # identical but for that one path, pointed at the repo directory compose mounts there:
    # promtool then loads and checks the shipped rules through the config's own glob, as
    # the container's Prometheus will, and its output must name the rules file.
    text = CONFIG_FILE.read_text(encoding="utf-8")
    assert load_yaml(CONFIG_FILE)["rule_files"] == [CONTAINER_RULES_GLOB]
    assert text.count(CONTAINER_RULES_GLOB) == 1, "expected the rules glob exactly once"
    container_dir, pattern = CONTAINER_RULES_GLOB.rsplit("/", 1)
    assert fnmatch.fnmatch(RULES_FILE.name, pattern), (
        f"{RULES_FILE.name} would not be loaded by {CONTAINER_RULES_GLOB}"
    )
    local = tmp_path / CONFIG_FILE.name
    local.write_text(text.replace(CONTAINER_RULES_GLOB, f"{RULES_DIR}/{pattern}"), "utf-8")

    output = run_promtool("check", "config", str(local))

    assert str(RULES_FILE) in output, f"{container_dir} glob did not pick up the rules\n{output}"


def test_rules_are_valid() -> None:
    run_promtool("check", "rules", str(RULES_FILE))


def test_rule_unit_tests_pass() -> None:
    run_promtool("test", "rules", str(RULES_TEST_FILE))


def test_every_alert_has_severity_annotations_and_runbook() -> None:
    runbook = (REPO / "docs" / "alerts-runbook.md").read_text(encoding="utf-8")
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        assert annotations.get("description"), f"{name}: no description"
        # The runbook's "### <AlertName>" section, as GitHub anchors it.
        assert annotations.get("runbook_url") == RUNBOOK + name.lower(), name
        assert f"\n### {name}\n" in runbook, f"{name}: no section in docs/alerts-runbook.md"
        if "atlas_interface_endpoint_info" in rule["expr"]:
            for label in ENDPOINT_ID_LABELS:
                assert f"$labels.{label}" in annotations["description"], f"{name}: {label}"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tests = load_yaml(RULES_TEST_FILE)
    rule_files = [(RULES_TEST_FILE.parent / path).resolve() for path in tests["rule_files"]]
    assert rule_files == [RULES_FILE.resolve()]

    firing: defaultdict[str, int] = defaultdict(int)
    silent: defaultdict[str, int] = defaultdict(int)
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            counts = firing if check.get("exp_alerts") else silent
            counts[check["alertname"]] += 1

    names = {rule["alert"] for rule in alerting_rules()}
    assert set(firing) | set(silent) <= names, "tests for alerts that do not exist"
    assert sorted(names - set(firing)) == [], "alerts never tested firing"
    assert sorted(names - set(silent)) == [], "alerts never tested silent"
