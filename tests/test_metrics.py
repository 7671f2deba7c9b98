"""The /metrics contract: endpoint gauges built from the state snapshot, and self-metrics."""

from __future__ import annotations

import asyncio
import gzip
import random
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import prometheus_client
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor import __version__
from monitor.atlas import EndpointRef
from monitor.config import EndpointConfig
from monitor.exposition import MonitorMetrics
from monitor.exposition import cache as exposition_cache
from monitor.exposition import endpoints as exposition_endpoints
from monitor.polling.alerts import ENDPOINT_ALERTS, AlertName
from monitor.polling.state import EndpointState
from monitor.providers import ENDPOINT_STATUSES, CloudProvider, ConnectionStatus
from tests.helpers import ENDPOINT_ID, GROUP_ID, PRIVATE_LINK_ID, endpoint_entry

OTHER_ENDPOINT_ID = "vpce-0a1b2c3d4e5f60718"
THIRD_ENDPOINT_ID = "vpce-1234abcd"
STATUS_SINCE = 1_700_000_000.25
LAST_SUCCESS = 1_700_003_600.5

STATUS = "atlas_interface_endpoint_status"
UP = "atlas_interface_endpoint_up"
ERROR = "atlas_interface_endpoint_error"
DELETE_REQUESTED = "atlas_interface_endpoint_delete_requested"
STATUS_SINCE_SECONDS = "atlas_interface_endpoint_status_since_timestamp_seconds"
LAST_SUCCESS_SECONDS = "atlas_interface_endpoint_last_success_timestamp_seconds"
INFO = "atlas_interface_endpoint_info"
ALERT_FIRING = "atlas_interface_endpoint_alert_firing"
ERROR_MESSAGE = "atlas_interface_endpoint_error_message_info"
CONFIGURED = "atlas_monitor_endpoints_configured"
LAST_CYCLE = "atlas_monitor_last_poll_cycle_timestamp_seconds"
ANSWER_FAMILIES = (STATUS, ERROR, DELETE_REQUESTED, STATUS_SINCE_SECONDS, LAST_SUCCESS_SECONDS)
"""Families that only an answer from Atlas can fill."""
ENDPOINT_FAMILIES = (UP, *ANSWER_FAMILIES, INFO, ALERT_FIRING, ERROR_MESSAGE)
ID_LABELS = frozenset({"group_id", "private_link_id", "interface_endpoint_id"})
ADD_RESULTS = ("added", "dry_run", "failed")

SnapshotList = list[tuple[EndpointConfig, EndpointState | None]]


def endpoint(**overrides: Any) -> EndpointConfig:
    return EndpointConfig.model_validate(endpoint_entry(**overrides))


def state(**overrides: Any) -> EndpointState:
    """The state after a valid AVAILABLE answer, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "status": ConnectionStatus.AVAILABLE,
        "raw_status": "AVAILABLE",
        "status_since": STATUS_SINCE,
        "up": True,
        "last_success": LAST_SUCCESS,
    }
    fields.update(overrides)
    return EndpointState(**fields)


def ids(interface_endpoint_id: str = ENDPOINT_ID) -> dict[str, str]:
    return {
        "group_id": GROUP_ID,
        "private_link_id": PRIVATE_LINK_ID,
        "interface_endpoint_id": interface_endpoint_id,
    }


def family(metrics: MonitorMetrics, name: str) -> Metric:
    for candidate in metrics.registry.collect():
        if candidate.name == name:
            return candidate
    raise AssertionError(f"no family {name!r} in the registry")


def samples(metrics: MonitorMetrics, name: str) -> list[Sample]:
    return list(family(metrics, name).samples)


def status_values(
    metrics: MonitorMetrics, interface_endpoint_id: str = ENDPOINT_ID
) -> dict[str, float]:
    return {
        sample.labels["status"]: sample.value
        for sample in samples(metrics, STATUS)
        if sample.labels["interface_endpoint_id"] == interface_endpoint_id
    }


def exposition(metrics: MonitorMetrics) -> str:
    return prometheus_client.generate_latest(metrics.registry).decode()


@pytest.fixture
def snapshot() -> SnapshotList:
    """The state table the collector reads; tests mutate it between scrapes."""
    return []


def state_in(snapshot: SnapshotList) -> Callable[[EndpointRef], EndpointState | None]:
    """The state table's lookup, as the Monitor passes it to ``watch``."""

    def state_of(ref: EndpointRef) -> EndpointState | None:
        return next((state for config, state in snapshot if config.ref == ref), None)

    return state_of


@pytest.fixture
def metrics(snapshot: SnapshotList) -> MonitorMetrics:
    watched = MonitorMetrics()
    watched.watch(lambda: snapshot, state_in(snapshot))
    return watched


@pytest.mark.parametrize(
    ("name", "expected_name"), [(None, ENDPOINT_ID), ("orders-prod", "orders-prod")]
)
def test_before_the_first_answer_the_endpoint_is_down_and_named(
    metrics: MonitorMetrics, snapshot: SnapshotList, name: str | None, expected_name: str
) -> None:
    snapshot.append((endpoint(name=name, labels={"team": "payments"}), None))

    registry = metrics.registry
    assert registry.get_sample_value(UP, ids()) == 0
    info_labels = {**ids(), "cloud_provider": "AWS", "name": expected_name, "team": "payments"}
    assert registry.get_sample_value(INFO, info_labels) == 1


@pytest.mark.parametrize("name", ANSWER_FAMILIES)
def test_before_the_first_answer_there_are_no_answer_series(
    metrics: MonitorMetrics, snapshot: SnapshotList, name: str
) -> None:
    snapshot.append((endpoint(), None))

    assert samples(metrics, name) == []


@pytest.mark.parametrize("current", ENDPOINT_STATUSES[CloudProvider.AWS])
def test_status_is_a_state_set_with_one_series_per_status(
    metrics: MonitorMetrics, snapshot: SnapshotList, current: ConnectionStatus
) -> None:
    snapshot.append((endpoint(), state(status=current, raw_status=current.value)))

    expected = {
        status.value: (1.0 if status is current else 0.0)
        for status in ENDPOINT_STATUSES[CloudProvider.AWS]
    }
    assert len(expected) == 7
    assert status_values(metrics) == expected
    assert len(samples(metrics, STATUS)) == 7


@pytest.mark.parametrize(("error_message", "expected"), [(None, 0), ("subnet deleted", 1)])
def test_error_gauge_follows_the_error_message(
    metrics: MonitorMetrics, snapshot: SnapshotList, error_message: str | None, expected: float
) -> None:
    snapshot.append((endpoint(), state(error_message=error_message)))

    assert metrics.registry.get_sample_value(ERROR, ids()) == expected


def error_messages(metrics: MonitorMetrics) -> list[tuple[dict[str, str], float]]:
    return [(sample.labels, sample.value) for sample in samples(metrics, ERROR_MESSAGE)]


def test_the_error_message_has_its_own_series_while_atlas_reports_one(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(), state(error_message="Subnet subnet-0a1b was deleted.")))
    with_message = error_messages(metrics)
    snapshot[0] = (endpoint(), state(error_message="Quota exceeded."))
    changed = error_messages(metrics)
    snapshot[0] = (endpoint(), state())
    cleared = error_messages(metrics)

    assert with_message == [({**ids(), "error_message": "Subnet subnet-0a1b was deleted."}, 1)]
    assert changed == [({**ids(), "error_message": "Quota exceeded."}, 1)]
    assert cleared == []


def test_the_error_message_is_on_no_other_series(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(), state(error_message="Subnet subnet-0a1b was deleted.")))

    text = exposition(metrics)

    (line,) = [line for line in text.splitlines() if "Subnet" in line]
    assert line.startswith(ERROR_MESSAGE + "{")


def test_the_error_message_series_is_one_bounded_printable_line(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    hostile = 'Rejected:\n\t"quoted" \\path\x1b[31m red\u202e\ud800 ' + "x" * 1000
    snapshot.append((endpoint(), state(error_message=hostile)))

    ((labels, value),) = error_messages(metrics)

    message = labels["error_message"]
    assert value == 1
    assert message.startswith('Rejected: "quoted" \\path[31m red\ufffd xxx')
    assert message.endswith("x…")
    assert len(message) == 256


def test_a_missing_endpoint_has_no_error_message_series(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(), state(status=None, raw_status=None, missing=True)))

    assert error_messages(metrics) == []


@pytest.mark.parametrize(("delete_requested", "expected"), [(False, 0), (True, 1)])
def test_delete_requested_gauge_is_zero_or_one(
    metrics: MonitorMetrics, snapshot: SnapshotList, delete_requested: bool, expected: float
) -> None:
    snapshot.append((endpoint(), state(delete_requested=delete_requested)))

    assert metrics.registry.get_sample_value(DELETE_REQUESTED, ids()) == expected


def test_an_answered_endpoint_is_up_with_the_state_timestamps(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(), state()))

    registry = metrics.registry
    assert registry.get_sample_value(UP, ids()) == 1
    assert registry.get_sample_value(STATUS_SINCE_SECONDS, ids()) == STATUS_SINCE
    assert registry.get_sample_value(LAST_SUCCESS_SECONDS, ids()) == LAST_SUCCESS


def test_a_failed_poll_keeps_the_last_status_but_is_down(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    after_failure = state(
        status=ConnectionStatus.PENDING,
        raw_status="PENDING",
        up=False,
        consecutive_failures=2,
        last_failure="timed out",
    )
    snapshot.append((endpoint(), after_failure))

    registry = metrics.registry
    assert registry.get_sample_value(UP, ids()) == 0
    assert status_values(metrics)["PENDING"] == 1
    assert sum(status_values(metrics).values()) == 1
    assert registry.get_sample_value(LAST_SUCCESS_SECONDS, ids()) == LAST_SUCCESS
    assert registry.get_sample_value(STATUS_SINCE_SECONDS, ids()) == STATUS_SINCE


def test_a_missing_endpoint_has_no_status_but_keeps_its_last_success(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    not_found = state(
        status=None,
        raw_status=None,
        status_since=None,
        up=False,
        missing=True,
        last_failure="not found in Atlas",
    )
    snapshot.append((endpoint(), not_found))

    registry = metrics.registry
    assert samples(metrics, STATUS) == []
    assert registry.get_sample_value(UP, ids()) == 0
    assert registry.get_sample_value(LAST_SUCCESS_SECONDS, ids()) == LAST_SUCCESS
    assert samples(metrics, STATUS_SINCE_SECONDS) == []


def test_a_missing_endpoint_never_answered_has_no_last_success(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    never_seen = state(
        status=None, raw_status=None, status_since=None, up=False, missing=True, last_success=None
    )
    snapshot.append((endpoint(), never_seen))

    assert samples(metrics, LAST_SUCCESS_SECONDS) == []
    assert metrics.registry.get_sample_value(UP, ids()) == 0


def test_info_carries_the_union_of_user_labels_and_other_families_only_ids(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(labels={"team": "payments", "env": "prod"}), state()))
    other = endpoint(interface_endpoint_id=OTHER_ENDPOINT_ID, name="other", labels={"region": "eu"})
    snapshot.append((other, state()))

    registry = metrics.registry
    aws = {"cloud_provider": "AWS"}
    first_info = {
        **ids(),
        **aws,
        "name": ENDPOINT_ID,
        "env": "prod",
        "region": "",
        "team": "payments",
    }
    other_info = {
        **ids(OTHER_ENDPOINT_ID),
        **aws,
        "name": "other",
        "env": "",
        "region": "eu",
        "team": "",
    }
    assert registry.get_sample_value(INFO, first_info) == 1
    assert registry.get_sample_value(INFO, other_info) == 1
    info_label_names = {frozenset(sample.labels) for sample in samples(metrics, INFO)}
    assert info_label_names == {ID_LABELS | {"cloud_provider", "name", "env", "region", "team"}}
    for name in (UP, ERROR, DELETE_REQUESTED, STATUS_SINCE_SECONDS, LAST_SUCCESS_SECONDS):
        label_names = {frozenset(sample.labels) for sample in samples(metrics, name)}
        assert label_names == {ID_LABELS}, name
    status_label_names = {frozenset(sample.labels) for sample in samples(metrics, STATUS)}
    assert status_label_names == {ID_LABELS | {"status"}}


def test_a_removed_endpoint_loses_every_series_at_the_next_scrape(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    kept = endpoint(labels={"team": "payments"})
    removed = endpoint(interface_endpoint_id=OTHER_ENDPOINT_ID, labels={"region": "eu"})
    snapshot.extend([(kept, state()), (removed, state(error_message="quota"))])
    before = exposition(metrics)
    assert OTHER_ENDPOINT_ID in before
    assert 'region="eu"' in before

    del snapshot[1]
    after = exposition(metrics)

    assert OTHER_ENDPOINT_ID not in after
    assert "region=" not in after
    for name in ENDPOINT_FAMILIES:
        assert all(
            sample.labels["interface_endpoint_id"] == ENDPOINT_ID
            for sample in samples(metrics, name)
        ), name
    assert metrics.registry.get_sample_value(UP, ids()) == 1


def alert_firing_values(metrics: MonitorMetrics) -> dict[str, float | None]:
    registry = metrics.registry
    return {
        alert.value: registry.get_sample_value(ALERT_FIRING, {**ids(), "alert": alert.value})
        for alert in ENDPOINT_ALERTS
    }


def test_every_alert_of_an_endpoint_is_zero_before_its_first_poll(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(), None))

    assert alert_firing_values(metrics) == dict.fromkeys(
        ["rejected", "failed", "error_message", "not_found", "unreachable", "stuck"], 0
    )


def test_alert_firing_is_one_exactly_for_the_firing_alerts(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    firing = {AlertName.REJECTED: LAST_SUCCESS, AlertName.UNREACHABLE: LAST_SUCCESS}
    snapshot.append((endpoint(), state(status=ConnectionStatus.REJECTED, firing=firing)))

    assert alert_firing_values(metrics) == {
        "rejected": 1,
        "error_message": 0,
        "not_found": 0,
        "unreachable": 1,
        "stuck": 0,
        "failed": 0,
    }
    label_names = {frozenset(sample.labels) for sample in samples(metrics, ALERT_FIRING)}
    assert label_names == {ID_LABELS | {"alert"}}


def test_last_poll_cycle_is_absent_until_a_cycle_finished() -> None:
    metrics = MonitorMetrics()
    assert samples(metrics, LAST_CYCLE) == []
    assert f"# TYPE {LAST_CYCLE} gauge" in exposition(metrics)

    metrics.cycle_finished(0.75, at=LAST_SUCCESS)

    registry = metrics.registry
    assert registry.get_sample_value(LAST_CYCLE) == LAST_SUCCESS
    assert registry.get_sample_value("atlas_monitor_poll_cycle_duration_seconds_count") == 1
    assert registry.get_sample_value("atlas_monitor_poll_cycle_duration_seconds_sum") == 0.75


def test_endpoints_configured_counts_the_snapshot(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    assert metrics.registry.get_sample_value(CONFIGURED) == 0

    snapshot.append((endpoint(), None))
    assert metrics.registry.get_sample_value(CONFIGURED) == 1

    snapshot.append((endpoint(interface_endpoint_id=OTHER_ENDPOINT_ID), state()))
    snapshot.append((endpoint(interface_endpoint_id=THIRD_ENDPOINT_ID), state(up=False)))
    assert metrics.registry.get_sample_value(CONFIGURED) == len(snapshot) == 3

    del snapshot[0]
    assert metrics.registry.get_sample_value(CONFIGURED) == 2


def test_build_info_names_the_running_version() -> None:
    registry = MonitorMetrics().registry

    assert registry.get_sample_value("atlas_monitor_build_info", {"version": __version__}) == 1
    assert len(family(MonitorMetrics(), "atlas_monitor_build_info").samples) == 1


def test_state_store_up_is_absent_without_a_state_file_else_0_or_1() -> None:
    metrics = MonitorMetrics()
    assert len(family(metrics, "atlas_monitor_state_store_up").samples) == 0
    for up, value in ((False, 0), (True, 1)):
        metrics.state_store_up = up
        assert metrics.registry.get_sample_value("atlas_monitor_state_store_up") == value


@pytest.mark.parametrize("alert", [alert.value for alert in AlertName])
def test_every_alert_counter_starts_at_zero(alert: str) -> None:
    registry = MonitorMetrics().registry

    assert registry.get_sample_value("atlas_monitor_alerts_total", {"alert": alert}) == 0


def test_there_is_one_alert_counter_per_alert() -> None:
    alert_samples = [
        sample
        for sample in samples(MonitorMetrics(), "atlas_monitor_alerts")
        if sample.name == "atlas_monitor_alerts_total"
    ]

    assert {sample.labels["alert"] for sample in alert_samples} == {
        "rejected",
        "error_message",
        "not_found",
        "unreachable",
        "stuck",
        "failed",
        "service_failed",
        "service_error_message",
    }


@pytest.mark.parametrize("result", ADD_RESULTS)
def test_every_add_result_counter_starts_at_zero(result: str) -> None:
    registry = MonitorMetrics().registry

    value = registry.get_sample_value("atlas_monitor_endpoints_added_total", {"result": result})
    assert value == 0


def test_api_requests_are_counted_per_method_and_code() -> None:
    metrics = MonitorMetrics()

    metrics.observe_request("GET", "200", 0.12)
    metrics.observe_request("GET", "200", 0.12)
    metrics.observe_request("GET", "401", 0.01)

    registry = metrics.registry
    requests = "atlas_monitor_api_requests_total"
    duration = "atlas_monitor_api_request_duration_seconds"
    assert registry.get_sample_value(requests, {"method": "GET", "code": "200"}) == 2
    assert registry.get_sample_value(requests, {"method": "GET", "code": "401"}) == 1
    assert registry.get_sample_value(f"{duration}_count", {"method": "GET"}) == 3
    assert registry.get_sample_value(f"{duration}_sum", {"method": "GET"}) == pytest.approx(0.25)


def test_two_monitors_do_not_share_samples_nor_touch_the_global_registry() -> None:
    busy = MonitorMetrics()
    quiet = MonitorMetrics()
    busy.watch(lambda: [(endpoint(), state())], lambda ref: state())

    busy.observe_request("GET", "200", 0.5)
    busy.alerts.labels(AlertName.REJECTED.value).inc()

    requests = "atlas_monitor_api_requests_total"
    assert busy.registry.get_sample_value(requests, {"method": "GET", "code": "200"}) == 1
    assert quiet.registry.get_sample_value(requests, {"method": "GET", "code": "200"}) is None
    assert quiet.registry.get_sample_value("atlas_monitor_alerts_total", {"alert": "rejected"}) == 0
    assert quiet.registry.get_sample_value(UP, ids()) is None
    assert quiet.registry.get_sample_value(CONFIGURED) is None
    global_registry = prometheus_client.REGISTRY
    build_info = {"version": __version__}
    assert global_registry.get_sample_value("atlas_monitor_build_info", build_info) is None
    assert global_registry.get_sample_value(requests, {"method": "GET", "code": "200"}) is None


def test_no_sample_carries_a_timestamp(metrics: MonitorMetrics, snapshot: SnapshotList) -> None:
    snapshot.append((endpoint(labels={"team": "payments"}), state(error_message="quota")))
    snapshot.append((endpoint(interface_endpoint_id=OTHER_ENDPOINT_ID), None))
    metrics.observe_request("GET", "200", 0.1)

    parsed = [
        sample
        for parsed_family in text_string_to_metric_families(exposition(metrics))
        for sample in parsed_family.samples
    ]

    assert {sample.name for sample in parsed} >= {*ENDPOINT_FAMILIES, CONFIGURED}
    assert [sample for sample in parsed if sample.timestamp is not None] == []


def test_collecting_leaves_the_snapshot_as_it_was(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    entries = [
        (endpoint(labels={"team": "payments"}), state()),
        (endpoint(interface_endpoint_id=OTHER_ENDPOINT_ID), None),
    ]
    snapshot.extend(entries)

    exposition(metrics)

    assert len(snapshot) == len(entries)
    for (config, current), (original_config, original_state) in zip(snapshot, entries, strict=True):
        assert config is original_config
        assert current is original_state
    assert snapshot[0][0].labels == {"team": "payments"}


def test_watch_reads_the_snapshot_only_when_collected() -> None:
    calls: list[None] = []
    entries = ((endpoint(), state()),)

    def snapshot_function() -> tuple[tuple[EndpointConfig, EndpointState | None], ...]:
        calls.append(None)
        return entries

    metrics = MonitorMetrics()
    metrics.watch(snapshot_function, lambda ref: None)
    assert calls == []

    exposition(metrics)
    assert len(calls) == 1


def test_openmetrics_rendering_ends_with_eof_and_status_is_a_gauge(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(labels={"team": "payments"}), state()))
    metrics.observe_request("GET", "200", 0.1)

    text = openmetrics_exposition.generate_latest(metrics.registry).decode()

    assert text.endswith("# EOF\n")
    families = {
        parsed.name: parsed for parsed in openmetrics_parser.text_string_to_metric_families(text)
    }
    assert families[STATUS].type == "gauge"
    assert len(families[STATUS].samples) == len(ENDPOINT_STATUSES[CloudProvider.AWS])
    assert families["atlas_monitor_api_requests"].type == "counter"
    assert families[INFO].type == "gauge"


def test_the_state_set_is_typed_gauge_in_the_text_format(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.append((endpoint(), state()))

    assert f"# TYPE {STATUS} gauge\n" in exposition(metrics)


# --- what /metrics serves: MonitorMetrics.render ----------------------------------------


def parsed(text: str, *, openmetrics: bool = False) -> dict[str, set[tuple[str, Any, float]]]:
    """Family -> its samples, as (name, sorted labels, value), from exposition text."""
    parse = (
        openmetrics_parser.text_string_to_metric_families
        if openmetrics
        else text_string_to_metric_families
    )
    return {
        family.name: {
            (sample.name, tuple(sorted(sample.labels.items())), sample.value)
            for sample in family.samples
        }
        for family in parse(text)
    }


def serve(metrics: MonitorMetrics, *, openmetrics: bool = False) -> str:
    return b"".join(metrics.render(openmetrics=openmetrics).chunks()).decode()


def test_label_values_that_need_escaping_survive_the_official_parser(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.extend(varied_snapshot())

    info = {
        **ids(),
        "cloud_provider": "AWS",
        "name": 'quote " back \\ slash',
        "team": "a\nb",
        "env": "",
    }
    assert metrics.registry.get_sample_value(INFO, info) == 1
    assert list(openmetrics_parser.text_string_to_metric_families(serve(metrics, openmetrics=True)))


def varied_snapshot() -> SnapshotList:
    """Every kind of endpoint row, with text that needs escaping."""
    return [
        (endpoint(name='quote " back \\ slash', labels={"team": "a\nb"}), state()),
        (endpoint(interface_endpoint_id=OTHER_ENDPOINT_ID, labels={"env": "prod"}), None),
        (
            endpoint(interface_endpoint_id=THIRD_ENDPOINT_ID),
            state(
                status=ConnectionStatus.REJECTED,
                error_message="no subnet",
                delete_requested=True,
                firing={AlertName.REJECTED: LAST_SUCCESS},
            ),
        ),
        (
            endpoint(interface_endpoint_id="vpce-0000000a"),
            state(status=None, status_since=None, up=False, missing=True),
        ),
    ]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_render_serves_exactly_what_the_registry_holds(
    metrics: MonitorMetrics, snapshot: SnapshotList, openmetrics: bool
) -> None:
    snapshot.extend(varied_snapshot())
    metrics.observe_request("GET", "200", 0.1)
    metrics.cycle_finished(0.5, at=LAST_SUCCESS)
    reference = (
        openmetrics_exposition.generate_latest(metrics.registry)
        if openmetrics
        else prometheus_client.generate_latest(metrics.registry)
    )

    served = serve(metrics, openmetrics=openmetrics)

    assert parsed(served, openmetrics=openmetrics) == parsed(
        reference.decode(), openmetrics=openmetrics
    )
    assert served.endswith("# EOF\n") == openmetrics
    assert served.count("# EOF") == (1 if openmetrics else 0)


def test_render_re_renders_only_the_endpoints_named_as_changed(
    metrics: MonitorMetrics, snapshot: SnapshotList, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot.extend(varied_snapshot())
    metrics.render()
    rendered: list[EndpointState | None] = []
    real = exposition_endpoints._Template.lines

    def counting(template: Any, endpoint_state: EndpointState | None) -> Any:
        rendered.append(endpoint_state)
        return real(template, endpoint_state)

    monkeypatch.setattr(exposition_endpoints._Template, "lines", counting)

    unchanged = serve(metrics)
    new_state = state(status=ConnectionStatus.AVAILABLE)
    snapshot[2] = (snapshot[2][0], new_state)
    metrics.endpoint_changed(snapshot[2][0].ref)
    metrics.endpoint_changed(snapshot[1][0].ref)  # named, but its state is the same object
    assert rendered == [new_state]  # when reported, not when scraped
    changed = serve(metrics)

    assert rendered == [new_state]
    assert snapshot[2][0].interface_endpoint_id == THIRD_ENDPOINT_ID
    assert unchanged != changed
    assert parsed(changed) == parsed(prometheus_client.generate_latest(metrics.registry).decode())


def test_render_drops_removed_endpoints_and_follows_the_label_union(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    snapshot.extend(varied_snapshot())
    metrics.render()

    del snapshot[0]  # the only endpoint with a "team" label
    metrics.prepare()  # as Monitor.reconfigure does
    served = serve(metrics)

    assert "team=" not in served
    assert f'interface_endpoint_id="{ENDPOINT_ID}"' not in served
    assert parsed(served) == parsed(prometheus_client.generate_latest(metrics.registry).decode())


# --- the cached exposition: pieces, dirty tracking, gzip ----------------------------------


def fresh_endpoint_text(snapshot: SnapshotList) -> bytes:
    """The endpoint families rendered from scratch, with no cache involved."""
    fresh = exposition_endpoints.EndpointExposition()
    fresh.sync(snapshot)
    return b"".join(exposition_cache.Exposition(fresh.pieces()).chunks())


def numbered(number: int, **overrides: Any) -> EndpointConfig:
    return endpoint(interface_endpoint_id=f"vpce-{number:08x}", **overrides)


def random_state(rng: random.Random) -> EndpointState | None:
    return rng.choice(
        [
            None,
            state(last_success=rng.choice([LAST_SUCCESS, LAST_SUCCESS + rng.random()])),
            state(up=rng.random() < 0.5, error_message=rng.choice([None, "quota"])),
            state(status=rng.choice(list(ConnectionStatus)), delete_requested=True),
            state(status=None, status_since=None, up=False, missing=True),
            state(firing={rng.choice(list(AlertName)): LAST_SUCCESS}),
        ]
    )


def compress(pieces: Sequence[exposition_cache.Piece]) -> None:
    """What MonitorMetrics.keep_compressed does with ``settled`` in a worker thread."""
    for piece in pieces:
        piece.compressed()


@pytest.mark.parametrize("seed", range(12))
def test_served_body_always_equals_a_fresh_render(
    metrics: MonitorMetrics,
    snapshot: SnapshotList,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
) -> None:
    """Random polls (rendered as reported), reloads (prepared), background compressions
    (finishing at once, later, after reloads and scrapes, or in a thread racing a scrape)
    and scrapes: whatever the cache holds, the body is a fresh render's, gzipped or not, and
    gzip.decompress checks its CRC."""
    monkeypatch.setattr(exposition_endpoints, "BLOCK_ENDPOINTS", 3)
    rng = random.Random(seed)
    next_number = 20
    snapshot.extend((numbered(number), random_state(rng)) for number in range(next_number))
    in_flight: list[Sequence[exposition_cache.Piece]] = []
    """Background compressions handed their pieces and not finished yet."""
    for _ in range(80):
        action = rng.random()
        if action < 0.15:
            in_flight.append(metrics.settled())
            if rng.random() < 0.5:
                compress(in_flight.pop(rng.randrange(len(in_flight))))
        elif action < 0.5 and snapshot:
            for _ in range(rng.randint(1, 6)):
                index = rng.randrange(len(snapshot))
                snapshot[index] = (snapshot[index][0], random_state(rng))
                metrics.endpoint_changed(snapshot[index][0].ref)
        elif action < 0.65:
            if snapshot and rng.random() < 0.5:
                del snapshot[rng.randrange(len(snapshot))]
            else:
                snapshot.insert(rng.randint(0, len(snapshot)), (numbered(next_number), None))
                next_number += 1
            if snapshot:  # a relabelled (equal ids, new config) endpoint rides along
                index = rng.randrange(len(snapshot))
                labels = rng.choice([{}, {"team": "payments"}, {"env": 'q"uote'}])
                config = snapshot[index][0].model_copy(update={"labels": labels})
                snapshot[index] = (config, snapshot[index][1])
            metrics.prepare()
        else:
            openmetrics = rng.random() < 0.5
            served = metrics.render(openmetrics=openmetrics)
            text = b"".join(served.chunks())
            racing = [
                threading.Thread(target=compress, args=(in_flight.pop(),))
                for _ in range(rng.randint(0, len(in_flight)))
            ]
            for thread in racing:
                thread.start()
            assert gzip.decompress(served.gzip()) == text
            for thread in racing:
                thread.join()
            endpoints = b"".join(piece.raw() for piece in served.pieces[1:])  # not self-metrics
            expected = fresh_endpoint_text(snapshot)
            if openmetrics:
                assert endpoints == expected + b"# EOF\n"
                assert list(openmetrics_parser.text_string_to_metric_families(text.decode()))
            else:
                assert endpoints == expected
                assert list(text_string_to_metric_families(text.decode()))


def test_unchanged_pieces_are_served_again_without_compressing_them(
    metrics: MonitorMetrics, snapshot: SnapshotList, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition_endpoints, "BLOCK_ENDPOINTS", 2)
    snapshot.extend((numbered(number), state()) for number in range(10))
    first = metrics.render()
    first.gzip()

    snapshot[5] = (snapshot[5][0], state(last_success=LAST_SUCCESS + 1))
    metrics.endpoint_changed(snapshot[5][0].ref)
    second = metrics.render()

    new = [piece for piece in second.pieces if piece not in first.pieces]
    # The self-metrics, and block 2 (endpoints 4 and 5) of the last-success family only.
    assert len(new) == 2
    assert new[1].raw() == b"".join(
        line
        for line in fresh_endpoint_text(snapshot[4:6]).splitlines(keepends=True)
        if line.startswith(LAST_SUCCESS_SECONDS.encode())
    )
    assert gzip.decompress(second.gzip()) == b"".join(second.chunks())


def counting_compressions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes every piece compression append to the returned list."""
    calls: list[int] = []
    real = zlib.compressobj

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(zlib, "compressobj", counting)
    return calls


def test_background_compression_leaves_a_scrape_only_the_blocks_still_being_polled(
    metrics: MonitorMetrics, snapshot: SnapshotList, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition_endpoints, "BLOCK_ENDPOINTS", 2)
    snapshot.extend((numbered(number), state()) for number in range(10))
    metrics.prepare()
    compress(metrics.settled())  # everything, after a reload
    calls = counting_compressions(monkeypatch)

    def poll(index: int, last_success: float) -> None:
        snapshot[index] = (snapshot[index][0], state(last_success=last_success))
        metrics.endpoint_changed(snapshot[index][0].ref)

    poll(1, LAST_SUCCESS + 1)  # block 0
    poll(5, LAST_SUCCESS + 1)  # block 2
    assert metrics.settled() == []  # both blocks may still be being polled
    poll(4, LAST_SUCCESS + 2)  # block 2 still is; block 0 was left
    settled = metrics.settled()
    assert [piece.raw() for piece in settled] == [
        b"".join(
            line
            for line in fresh_endpoint_text(snapshot[0:2]).splitlines(keepends=True)
            if line.startswith(LAST_SUCCESS_SECONDS.encode())
        )
    ]
    compress(settled)
    assert len(calls) == 1

    served = metrics.render()
    assert gzip.decompress(served.gzip()) == b"".join(served.chunks())
    # The self-metrics, and block 2's last-success piece: the only one still changing.
    assert len(calls) == 3
    assert b"".join(piece.raw() for piece in served.pieces[1:]) == fresh_endpoint_text(snapshot)


async def test_keep_compressed_races_polls_reloads_and_scrapes_and_stops_when_cancelled(
    metrics: MonitorMetrics, snapshot: SnapshotList, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background task for real: rounds every millisecond, compressing in worker threads
    while polls, reloads and scrapes (gzipped in threads too) go on."""
    monkeypatch.setattr(exposition_endpoints, "BLOCK_ENDPOINTS", 3)
    rng = random.Random(7)
    snapshot.extend((numbered(number), random_state(rng)) for number in range(30))
    metrics.prepare()
    background = asyncio.create_task(metrics.keep_compressed(every=0.001))
    for step in range(200):
        index = rng.randrange(len(snapshot))
        snapshot[index] = (snapshot[index][0], random_state(rng))
        metrics.endpoint_changed(snapshot[index][0].ref)
        if step % 40 == 39:
            snapshot.append((numbered(100 + step), None))
            metrics.prepare()
        if step % 5 == 0:
            served = metrics.render()
            body = await asyncio.to_thread(served.gzip)
            assert gzip.decompress(body) == b"".join(served.chunks())
            assert b"".join(piece.raw() for piece in served.pieces[1:]) == fresh_endpoint_text(
                snapshot
            )
        await asyncio.sleep(rng.choice([0, 0.0005, 0.002]))

    def all_compressed() -> bool:
        return all(piece.is_compressed for piece in metrics.render().pieces[1:])

    for _ in range(5000):  # polls stopped: within two rounds every block is compressed
        if all_compressed():
            break
        await asyncio.sleep(0.002)
    assert all_compressed()
    calls = counting_compressions(monkeypatch)
    served = metrics.render()
    assert gzip.decompress(served.gzip()) == b"".join(served.chunks())
    assert len(calls) == 1  # the self-metrics only

    background.cancel()
    with pytest.raises(asyncio.CancelledError):
        await background


def test_an_endpoint_not_reported_as_changed_keeps_its_lines_until_prepare(
    metrics: MonitorMetrics, snapshot: SnapshotList
) -> None:
    """The cache trusts the reports: what is not reported is served as it was, which is
    why the Monitor reports every replaced state (tests/test_poller.py checks it does)."""
    snapshot.append((endpoint(), state(up=True)))
    before = serve(metrics)
    snapshot[0] = (snapshot[0][0], state(up=False))
    assert serve(metrics) == before
    metrics.prepare()
    assert serve(metrics) != before
    assert parsed(serve(metrics)) == parsed(exposition(metrics))


@pytest.mark.parametrize("libz", [True, False], ids=["libz", "without-libz"])
def test_gzip_is_one_member_as_curl_and_wget_read_only_the_first(
    libz: bool, metrics: MonitorMetrics, snapshot: SnapshotList, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition_endpoints, "BLOCK_ENDPOINTS", 2)
    if not libz:
        monkeypatch.setattr(exposition_cache, "_libz_crc32_combine", None)
    snapshot.extend(varied_snapshot())
    served = metrics.render()
    assert len(served.pieces) > 2

    first_member = zlib.decompressobj(wbits=31)  # gzip, stopping at a member's end as curl
    text = first_member.decompress(served.gzip())

    assert text == b"".join(served.chunks())
    assert first_member.eof
    assert first_member.unused_data == b""


@pytest.mark.skipif(
    exposition_cache._libz_crc32_combine is None, reason="libz's crc32_combine not found"
)
@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 65_536])
def test_crc32_combine_agrees_with_zlib(size: int) -> None:
    rng = random.Random(size)
    first = rng.randbytes(rng.randrange(1000))
    second = rng.randbytes(size)
    combine = exposition_cache._libz_crc32_combine
    assert combine is not None
    assert combine(zlib.crc32(first), zlib.crc32(second), size) == zlib.crc32(first + second)
