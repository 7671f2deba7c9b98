"""Endpoint state transitions: fire once, resolve once, keep what a failed poll cannot know."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from monitor.atlas import EndpointService, InterfaceEndpoint
from monitor.config import AlertSettings, MonitorConfig
from monitor.polling.alerts import AlertEvent
from monitor.polling.alerts import AlertName as Alert
from monitor.polling.state import (
    AddAction,
    AddPolicy,
    EndpointState,
    Observation,
    ServiceObservation,
    ServiceState,
    advance,
    advance_service,
    forget,
    forget_service,
    next_add_action,
)
from monitor.providers import ENDPOINT_STATUSES, CloudProvider, ServiceStatus
from monitor.providers import ConnectionStatus as Status
from tests.helpers import ENDPOINT_ID, config_document, endpoint_entry

UNKNOWN_RAW_STATUS = "SOMETHING_NEW"
PROVISIONING_STATUSES = (Status.NONE, Status.PENDING_ACCEPTANCE, Status.PENDING)
SETTLED_STATUSES = (Status.AVAILABLE, Status.REJECTED, Status.DELETING, Status.UNKNOWN)
STUCK_AFTER = 1800.0
FAILED = Observation.failed("timed out")
NOT_FOUND = Observation.not_found()
DEFAULT_RULES = AlertSettings()
NEVER_UNREACHABLE = AlertSettings(unreachable_after_failures=1000)


def raw(status: Status) -> str:
    return UNKNOWN_RAW_STATUS if status is Status.UNKNOWN else status.value


def answer(
    status: Status | str, error_message: str | None = None, delete_requested: bool = False
) -> InterfaceEndpoint:
    raw_status = raw(status) if isinstance(status, Status) else status
    # Statuses AWS does not use are parsed as GCP's (a superset of Azure's), not as UNKNOWN.
    aws = raw_status in ENDPOINT_STATUSES[CloudProvider.AWS]
    provider = CloudProvider.AWS if aws else CloudProvider.GCP
    return InterfaceEndpoint(
        ENDPOINT_ID, Status.parse(raw_status, provider), raw_status, error_message, delete_requested
    )


def answered(
    status: Status | str, error_message: str | None = None, delete_requested: bool = False
) -> Observation:
    return Observation.answered(answer(status, error_message, delete_requested))


def rules(**overrides: float) -> AlertSettings:
    return AlertSettings.model_validate(overrides)


def fired(
    alert: Alert,
    status: Status | None,
    previous: Status | None,
    error_message: str | None = None,
) -> AlertEvent:
    return AlertEvent(alert, True, status, previous, error_message)


def resolved(
    alert: Alert,
    status: Status | None,
    previous: Status | None,
    error_message: str | None = None,
) -> AlertEvent:
    return AlertEvent(alert, False, status, previous, error_message)


def walk(
    steps: Iterable[tuple[float, Observation]],
    settings: AlertSettings = DEFAULT_RULES,
    start: EndpointState | None = None,
) -> tuple[EndpointState, list[AlertEvent]]:
    """The state after the last step, and every event emitted on the way."""
    state = start or EndpointState()
    events: list[AlertEvent] = []
    for now, observation in steps:
        transition = advance(state, observation, now, settings)
        state = transition.state
        events.extend(transition.events)
    return state, events


def after(
    observation: Observation, now: float = 0.0, settings: AlertSettings = DEFAULT_RULES
) -> EndpointState:
    """The state after ``observation`` is the very first one."""
    return advance(EndpointState(), observation, now, settings).state


# First observation


@pytest.mark.parametrize(
    ("raw_status", "expected_status", "expected_alerts"),
    [
        pytest.param("NONE", Status.NONE, [], id="NONE"),
        pytest.param("PENDING_ACCEPTANCE", Status.PENDING_ACCEPTANCE, [], id="PENDING_ACCEPTANCE"),
        pytest.param("PENDING", Status.PENDING, [], id="PENDING"),
        pytest.param("AVAILABLE", Status.AVAILABLE, [], id="AVAILABLE"),
        pytest.param("REJECTED", Status.REJECTED, [Alert.REJECTED], id="REJECTED"),
        pytest.param("DELETING", Status.DELETING, [], id="DELETING"),
        pytest.param("UNKNOWN", Status.UNKNOWN, [], id="UNKNOWN-literal"),
        pytest.param(UNKNOWN_RAW_STATUS, Status.UNKNOWN, [], id="unknown-raw-value"),
    ],
)
def test_first_answer_records_the_status_and_fires_its_alerts(
    raw_status: str, expected_status: Status, expected_alerts: list[Alert]
) -> None:
    now = 1_000.0
    transition = advance(EndpointState(), answered(raw_status), now, DEFAULT_RULES)

    assert transition.events == [fired(alert, expected_status, None) for alert in expected_alerts]
    state = transition.state
    assert state.status is expected_status
    assert state.raw_status == raw_status
    assert state.status_since == now
    assert state.up is True
    assert state.last_success == now
    assert state.consecutive_failures == 0
    assert state.missing is False
    assert state.last_failure is None
    assert state.firing == dict.fromkeys(expected_alerts, now)


@pytest.mark.parametrize(
    ("status", "expected_alerts"),
    [
        pytest.param(Status.PENDING, [Alert.ERROR_MESSAGE], id="PENDING"),
        pytest.param(Status.AVAILABLE, [Alert.ERROR_MESSAGE], id="AVAILABLE"),
        pytest.param(Status.REJECTED, [Alert.REJECTED, Alert.ERROR_MESSAGE], id="REJECTED"),
        pytest.param(Status.DELETING, [Alert.ERROR_MESSAGE], id="DELETING"),
    ],
)
def test_first_answer_with_an_error_message_fires_error_message(
    status: Status, expected_alerts: list[Alert]
) -> None:
    transition = advance(EndpointState(), answered(status, "subnet gone"), 5.0, DEFAULT_RULES)

    assert transition.events == [
        fired(alert, status, None, "subnet gone") for alert in expected_alerts
    ]
    assert transition.state.error_message == "subnet gone"
    assert transition.state.firing == dict.fromkeys(expected_alerts, 5.0)


def test_first_answer_carries_delete_requested() -> None:
    state = after(answered(Status.AVAILABLE, delete_requested=True))

    assert state.delete_requested is True


def test_first_observation_not_found_fires_not_found() -> None:
    transition = advance(EndpointState(), NOT_FOUND, 7.0, DEFAULT_RULES)

    assert transition.events == [fired(Alert.NOT_FOUND, None, None)]
    assert transition.state.firing == {Alert.NOT_FOUND: 7.0}
    assert transition.state.missing is True
    assert transition.state.status is None


def test_first_observation_failed_with_threshold_one_fires_unreachable_without_status() -> None:
    transition = advance(EndpointState(), FAILED, 7.0, rules(unreachable_after_failures=1))

    assert transition.events == [fired(Alert.UNREACHABLE, None, None)]
    assert transition.state.firing == {Alert.UNREACHABLE: 7.0}
    assert transition.state.up is False
    assert transition.state.last_success is None
    assert transition.state.last_failure == "timed out"


def test_advance_leaves_the_previous_state_untouched() -> None:
    previous = after(answered(Status.REJECTED, "quota"))
    firing_before = dict(previous.firing)

    advance(previous, answered(Status.AVAILABLE), 60.0, DEFAULT_RULES)

    assert previous.firing == firing_before
    assert previous.status is Status.REJECTED


# Status changes


def _status_pairs() -> list[Any]:
    cases = []
    for before, now in itertools.product(ENDPOINT_STATUSES[CloudProvider.AWS], repeat=2):
        events: list[AlertEvent] = []
        firing: dict[Alert, float] = {}
        if now is Status.REJECTED:
            firing = {Alert.REJECTED: 0.0 if before is Status.REJECTED else 60.0}
            if before is not Status.REJECTED:
                events = [fired(Alert.REJECTED, now, before)]
        elif before is Status.REJECTED:
            events = [resolved(Alert.REJECTED, now, before)]
        cases.append(pytest.param(before, now, events, firing, id=f"{before}->{now}"))
    return cases


@pytest.mark.parametrize(("before", "now", "expected_events", "expected_firing"), _status_pairs())
def test_status_change(
    before: Status,
    now: Status,
    expected_events: list[AlertEvent],
    expected_firing: dict[Alert, float],
) -> None:
    settings = rules(stuck_after_seconds=0)
    previous = after(answered(before), 0.0, settings)

    transition = advance(previous, answered(now), 60.0, settings)

    assert transition.events == expected_events
    assert transition.state.firing == expected_firing
    assert transition.state.status is now
    assert transition.state.raw_status == raw(now)
    assert transition.state.status_since == (0.0 if before is now else 60.0)
    assert transition.state.last_success == 60.0


@pytest.mark.parametrize(
    ("first_raw", "second_raw", "expected_since"),
    [
        pytest.param(UNKNOWN_RAW_STATUS, UNKNOWN_RAW_STATUS, 0.0, id="same-unknown-value"),
        pytest.param(UNKNOWN_RAW_STATUS, "SOMETHING_ELSE", 60.0, id="other-unknown-value"),
        pytest.param("UNKNOWN", UNKNOWN_RAW_STATUS, 60.0, id="literal-UNKNOWN-then-new-value"),
    ],
)
def test_status_since_follows_the_raw_value_not_the_parsed_one(
    first_raw: str, second_raw: str, expected_since: float
) -> None:
    transition = advance(after(answered(first_raw)), answered(second_raw), 60.0, DEFAULT_RULES)

    assert transition.events == []
    assert transition.state.status is Status.UNKNOWN
    assert transition.state.raw_status == second_raw
    assert transition.state.status_since == expected_since


def test_status_since_survives_failed_polls() -> None:
    state, _ = walk(
        [
            (0.0, answered(Status.PENDING)),
            (60.0, FAILED),
            (120.0, FAILED),
            (180.0, answered(Status.PENDING)),
        ]
    )

    assert state.status_since == 0.0
    assert state.last_success == 180.0


def test_status_since_restarts_after_a_404() -> None:
    state, _ = walk(
        [
            (0.0, answered(Status.AVAILABLE)),
            (60.0, NOT_FOUND),
            (120.0, answered(Status.AVAILABLE)),
        ]
    )

    assert state.status_since == 120.0


# error_message


@pytest.mark.parametrize(
    ("before", "now", "expected_events", "expected_firing"),
    [
        pytest.param(
            None,
            "subnet gone",
            [fired(Alert.ERROR_MESSAGE, Status.AVAILABLE, Status.AVAILABLE, "subnet gone")],
            {Alert.ERROR_MESSAGE: 60.0},
            id="appears",
        ),
        pytest.param("subnet gone", "subnet gone", [], {Alert.ERROR_MESSAGE: 0.0}, id="stays"),
        pytest.param(
            "subnet gone", "quota exceeded", [], {Alert.ERROR_MESSAGE: 0.0}, id="changes-text"
        ),
        pytest.param(
            "subnet gone",
            None,
            [resolved(Alert.ERROR_MESSAGE, Status.AVAILABLE, Status.AVAILABLE, None)],
            {},
            id="clears",
        ),
        pytest.param(None, None, [], {}, id="never-there"),
    ],
)
def test_error_message(
    before: str | None,
    now: str | None,
    expected_events: list[AlertEvent],
    expected_firing: dict[Alert, float],
) -> None:
    previous = after(answered(Status.AVAILABLE, before))

    transition = advance(previous, answered(Status.AVAILABLE, now), 60.0, DEFAULT_RULES)

    assert transition.events == expected_events
    assert transition.state.firing == expected_firing
    assert transition.state.error_message == now


@pytest.mark.parametrize(
    ("before", "now", "expected_events"),
    [
        pytest.param(
            answered(Status.AVAILABLE),
            answered(Status.REJECTED, "quota"),
            [
                fired(Alert.REJECTED, Status.REJECTED, Status.AVAILABLE, "quota"),
                fired(Alert.ERROR_MESSAGE, Status.REJECTED, Status.AVAILABLE, "quota"),
            ],
            id="both-start",
        ),
        pytest.param(
            answered(Status.REJECTED, "quota"),
            answered(Status.AVAILABLE),
            [
                resolved(Alert.REJECTED, Status.AVAILABLE, Status.REJECTED),
                resolved(Alert.ERROR_MESSAGE, Status.AVAILABLE, Status.REJECTED),
            ],
            id="both-end",
        ),
        pytest.param(
            answered(Status.REJECTED, "quota"),
            answered(Status.AVAILABLE, "quota"),
            [resolved(Alert.REJECTED, Status.AVAILABLE, Status.REJECTED, "quota")],
            id="rejected-ends-error-stays",
        ),
        pytest.param(
            answered(Status.REJECTED, "quota"),
            answered(Status.REJECTED),
            [resolved(Alert.ERROR_MESSAGE, Status.REJECTED, Status.REJECTED)],
            id="error-ends-rejected-stays",
        ),
    ],
)
def test_rejected_and_error_message_move_independently(
    before: Observation, now: Observation, expected_events: list[AlertEvent]
) -> None:
    transition = advance(after(before), now, 60.0, DEFAULT_RULES)

    assert transition.events == expected_events


# not_found


def test_a_second_404_emits_nothing() -> None:
    transition = advance(after(NOT_FOUND, 0.0), NOT_FOUND, 60.0, DEFAULT_RULES)

    assert transition.events == []
    assert transition.state.firing == {Alert.NOT_FOUND: 0.0}
    assert transition.state.missing is True


@pytest.mark.parametrize(
    ("found", "expected_events", "expected_firing"),
    [
        pytest.param(
            answered(Status.AVAILABLE),
            [resolved(Alert.NOT_FOUND, Status.AVAILABLE, None)],
            {},
            id="AVAILABLE",
        ),
        pytest.param(
            answered(Status.PENDING_ACCEPTANCE),
            [resolved(Alert.NOT_FOUND, Status.PENDING_ACCEPTANCE, None)],
            {},
            id="PENDING_ACCEPTANCE",
        ),
        pytest.param(
            answered(Status.REJECTED),
            [
                fired(Alert.REJECTED, Status.REJECTED, None),
                resolved(Alert.NOT_FOUND, Status.REJECTED, None),
            ],
            {Alert.REJECTED: 60.0},
            id="REJECTED",
        ),
    ],
)
def test_an_answer_after_a_404_resolves_not_found(
    found: Observation, expected_events: list[AlertEvent], expected_firing: dict[Alert, float]
) -> None:
    transition = advance(after(NOT_FOUND), found, 60.0, DEFAULT_RULES)

    assert transition.events == expected_events
    assert transition.state.firing == expected_firing
    assert transition.state.missing is False


@pytest.mark.parametrize(
    ("rejected", "expected_events"),
    [
        pytest.param(
            answered(Status.REJECTED),
            [
                resolved(Alert.REJECTED, None, Status.REJECTED),
                fired(Alert.NOT_FOUND, None, Status.REJECTED),
            ],
            id="rejected",
        ),
        pytest.param(
            answered(Status.REJECTED, "quota"),
            [
                resolved(Alert.REJECTED, None, Status.REJECTED),
                resolved(Alert.ERROR_MESSAGE, None, Status.REJECTED),
                fired(Alert.NOT_FOUND, None, Status.REJECTED),
            ],
            id="rejected-with-error-message",
        ),
    ],
)
def test_a_404_after_rejected_resolves_rejected_and_fires_not_found_at_once(
    rejected: Observation, expected_events: list[AlertEvent]
) -> None:
    transition = advance(after(rejected), NOT_FOUND, 60.0, DEFAULT_RULES)

    assert transition.events == expected_events
    assert transition.state.firing == {Alert.NOT_FOUND: 60.0}


def test_a_404_clears_the_status_fields() -> None:
    previous = after(answered(Status.DELETING, "going", delete_requested=True), 0.0)

    state = advance(previous, NOT_FOUND, 60.0, DEFAULT_RULES).state

    assert state.status is None
    assert state.raw_status is None
    assert state.status_since is None
    assert state.error_message is None
    assert state.delete_requested is False
    assert state.missing is True
    assert state.consecutive_failures == 0


def test_failed_polls_after_a_404_keep_not_found_and_missing() -> None:
    state, events = walk([(0.0, NOT_FOUND), (60.0, FAILED), (120.0, FAILED)], NEVER_UNREACHABLE)

    assert events == [fired(Alert.NOT_FOUND, None, None)]
    assert state.firing == {Alert.NOT_FOUND: 0.0}
    assert state.missing is True
    assert state.consecutive_failures == 2


# unreachable


@pytest.mark.parametrize("threshold", [1, 3])
def test_unreachable_fires_exactly_at_the_threshold_and_only_once(threshold: int) -> None:
    settings = rules(unreachable_after_failures=threshold)
    state = after(answered(Status.AVAILABLE), 0.0, settings)
    events_per_failure = []
    failures_counted = []
    for failure in range(1, threshold + 4):
        transition = advance(state, FAILED, 60.0 * failure, settings)
        state = transition.state
        events_per_failure.append(transition.events)
        failures_counted.append(state.consecutive_failures)

    expected_fire = [fired(Alert.UNREACHABLE, Status.AVAILABLE, Status.AVAILABLE)]
    assert events_per_failure == [[]] * (threshold - 1) + [expected_fire] + [[]] * 3
    assert failures_counted == list(range(1, threshold + 4))
    assert state.firing == {Alert.UNREACHABLE: 60.0 * threshold}


@pytest.mark.parametrize("threshold", [1, 3])
@pytest.mark.parametrize(
    ("ending", "expected_events"),
    [
        pytest.param(
            answered(Status.AVAILABLE),
            [resolved(Alert.UNREACHABLE, Status.AVAILABLE, Status.AVAILABLE)],
            id="answer",
        ),
        pytest.param(
            NOT_FOUND,
            [
                fired(Alert.NOT_FOUND, None, Status.AVAILABLE),
                resolved(Alert.UNREACHABLE, None, Status.AVAILABLE),
            ],
            id="404",
        ),
    ],
)
def test_unreachable_resolves_once_on_the_next_answer_or_404(
    threshold: int, ending: Observation, expected_events: list[AlertEvent]
) -> None:
    settings = rules(unreachable_after_failures=threshold)
    failures = [(60.0 * n, FAILED) for n in range(1, threshold + 2)]
    state, _ = walk([(0.0, answered(Status.AVAILABLE)), *failures], settings)
    assert Alert.UNREACHABLE in state.firing

    ended = advance(state, ending, 1_000.0, settings)
    again = advance(ended.state, ending, 1_060.0, settings)

    assert ended.events == expected_events
    assert Alert.UNREACHABLE not in ended.state.firing
    assert ended.state.consecutive_failures == 0
    assert again.events == []


LOCAL_FAILURE = Observation.failed("not sent, this host is out of resources", local=True)


def test_polls_failed_on_this_host_never_bring_unreachable_closer_but_are_not_up() -> None:
    """Out of file descriptors, the daemon cannot ask Atlas: that is no news about Atlas,
    so however many such polls fail, `unreachable` does not fire (it used to: 241 false
    alerts in one attack); the endpoint is honestly not up, and the next real failures
    count from where they were."""
    settings = rules(unreachable_after_failures=3)
    state, events = walk(
        [(0.0, answered(Status.AVAILABLE)), (60.0, FAILED)]
        + [(60.0 * n, LOCAL_FAILURE) for n in range(2, 12)],
        settings,
    )
    assert events == []
    assert state.up is False
    assert state.consecutive_failures == 1
    assert state.last_failure == "not sent, this host is out of resources"
    assert state.status is Status.AVAILABLE

    later = advance(advance(state, FAILED, 720.0, settings).state, FAILED, 780.0, settings)
    assert later.events == [fired(Alert.UNREACHABLE, Status.AVAILABLE, Status.AVAILABLE)]


def test_an_unreachable_alert_already_firing_keeps_firing_through_local_failures() -> None:
    settings = rules(unreachable_after_failures=1)
    state, _ = walk([(0.0, answered(Status.AVAILABLE)), (60.0, FAILED)], settings)
    assert Alert.UNREACHABLE in state.firing
    local = advance(state, LOCAL_FAILURE, 120.0, settings)
    assert local.events == []
    assert Alert.UNREACHABLE in local.state.firing


def test_failed_polls_keep_the_last_known_status_fields() -> None:
    previous = after(answered(Status.REJECTED, "quota", delete_requested=True), 0.0)

    state, _ = walk([(60.0 * n, FAILED) for n in range(1, 6)], start=previous)

    assert state.status is Status.REJECTED
    assert state.raw_status == "REJECTED"
    assert state.status_since == 0.0
    assert state.error_message == "quota"
    assert state.delete_requested is True
    assert state.last_success == 0.0
    assert state.missing is False
    assert state.up is False
    assert state.consecutive_failures == 5
    assert state.last_failure == "timed out"


def test_failed_polls_keep_rejected_firing_without_re_emitting_it() -> None:
    state, events = walk(
        [
            (0.0, answered(Status.REJECTED)),
            (60.0, FAILED),
            (120.0, FAILED),
            (180.0, FAILED),
            (240.0, FAILED),
        ]
    )

    assert events == [
        fired(Alert.REJECTED, Status.REJECTED, None),
        fired(Alert.UNREACHABLE, Status.REJECTED, Status.REJECTED),
    ]
    assert state.firing == {Alert.REJECTED: 0.0, Alert.UNREACHABLE: 180.0}

    recovered = advance(state, answered(Status.AVAILABLE), 300.0, DEFAULT_RULES)

    assert recovered.events == [
        resolved(Alert.REJECTED, Status.AVAILABLE, Status.REJECTED),
        resolved(Alert.UNREACHABLE, Status.AVAILABLE, Status.REJECTED),
    ]
    assert recovered.state.firing == {}


@pytest.mark.parametrize(
    ("history", "expected_firing"),
    [
        pytest.param(
            [(0.0, answered(Status.REJECTED, "quota"))],
            {Alert.REJECTED: 0.0, Alert.ERROR_MESSAGE: 0.0},
            id="rejected-with-error-message",
        ),
        pytest.param([(0.0, NOT_FOUND)], {Alert.NOT_FOUND: 0.0}, id="not-found"),
        pytest.param(
            [(0.0, answered(Status.PENDING)), (STUCK_AFTER, answered(Status.PENDING))],
            {Alert.STUCK: STUCK_AFTER},
            id="stuck",
        ),
    ],
)
def test_a_failed_poll_keeps_answer_alerts_exactly_as_they_were(
    history: list[tuple[float, Observation]], expected_firing: dict[Alert, float]
) -> None:
    state, _ = walk(history, NEVER_UNREACHABLE)
    assert state.firing == expected_firing

    transition = advance(state, FAILED, 10 * STUCK_AFTER, NEVER_UNREACHABLE)

    assert transition.events == []
    assert transition.state.firing == expected_firing


@pytest.mark.parametrize(
    "remembered",
    [
        pytest.param(
            EndpointState(status=Status.REJECTED, raw_status="REJECTED", status_since=0.0),
            id="rejected",
        ),
        pytest.param(
            EndpointState(
                status=Status.AVAILABLE, raw_status="AVAILABLE", status_since=0.0, error_message="x"
            ),
            id="error-message",
        ),
        pytest.param(EndpointState(missing=True), id="not-found"),
        pytest.param(
            EndpointState(status=Status.PENDING, raw_status="PENDING", status_since=0.0),
            id="stuck",
        ),
    ],
)
def test_a_failed_poll_starts_no_answer_alert(remembered: EndpointState) -> None:
    transition = advance(remembered, FAILED, 10 * STUCK_AFTER, NEVER_UNREACHABLE)

    assert transition.events == []
    assert transition.state.firing == {}


@pytest.mark.parametrize(
    ("interruption", "expected_events"),
    [
        pytest.param(answered(Status.AVAILABLE), [], id="answer"),
        pytest.param(NOT_FOUND, [fired(Alert.NOT_FOUND, None, Status.AVAILABLE)], id="404"),
    ],
)
def test_consecutive_failures_restart_after_an_answer_or_404(
    interruption: Observation, expected_events: list[AlertEvent]
) -> None:
    state = after(answered(Status.AVAILABLE))
    counted = []
    events: list[AlertEvent] = []
    for now, observation in enumerate([FAILED, FAILED, interruption, FAILED, FAILED]):
        transition = advance(state, observation, float(now + 1), DEFAULT_RULES)
        state = transition.state
        counted.append(state.consecutive_failures)
        events.extend(transition.events)

    assert counted == [1, 2, 0, 1, 2]
    assert events == expected_events

    third = advance(state, FAILED, 10.0, DEFAULT_RULES)

    assert [event.alert for event in third.events] == [Alert.UNREACHABLE]


# stuck


@pytest.mark.parametrize("status", PROVISIONING_STATUSES, ids=str)
@pytest.mark.parametrize(
    ("elapsed", "fires"),
    [
        pytest.param(STUCK_AFTER - 0.5, False, id="just-below"),
        pytest.param(STUCK_AFTER, True, id="exactly-at"),
        pytest.param(STUCK_AFTER * 10, True, id="long-after"),
    ],
)
def test_stuck_boundary(status: Status, elapsed: float, fires: bool) -> None:
    settings = rules(stuck_after_seconds=STUCK_AFTER)
    since = 1_000.0

    transition = advance(
        after(answered(status), since, settings), answered(status), since + elapsed, settings
    )

    assert transition.events == ([fired(Alert.STUCK, status, status)] if fires else [])
    assert (Alert.STUCK in transition.state.firing) is fires


def test_stuck_counts_from_when_the_status_was_first_seen() -> None:
    state, events = walk(
        [
            (0.0, answered(Status.PENDING)),
            (1_000.0, answered(Status.PENDING)),
            (STUCK_AFTER, answered(Status.PENDING)),
            (STUCK_AFTER + 60, answered(Status.PENDING)),
        ]
    )

    assert events == [fired(Alert.STUCK, Status.PENDING, Status.PENDING)]
    assert state.firing == {Alert.STUCK: STUCK_AFTER}


@pytest.mark.parametrize("status", SETTLED_STATUSES, ids=str)
def test_stuck_never_fires_outside_provisioning_statuses(status: Status) -> None:
    state, _ = walk([(0.0, answered(status)), (100 * STUCK_AFTER, answered(status))])

    assert Alert.STUCK not in state.firing


@pytest.mark.parametrize("status", PROVISIONING_STATUSES, ids=str)
def test_stuck_disabled_with_zero(status: Status) -> None:
    settings = rules(stuck_after_seconds=0)

    _, events = walk(
        [(0.0, answered(status)), (1e6, answered(status)), (1e9, answered(status))], settings
    )

    assert events == []


@pytest.mark.parametrize(
    ("ending", "expected_events"),
    [
        pytest.param(
            answered(Status.AVAILABLE),
            [resolved(Alert.STUCK, Status.AVAILABLE, Status.PENDING)],
            id="AVAILABLE",
        ),
        pytest.param(
            answered(Status.REJECTED),
            [
                fired(Alert.REJECTED, Status.REJECTED, Status.PENDING),
                resolved(Alert.STUCK, Status.REJECTED, Status.PENDING),
            ],
            id="REJECTED",
        ),
        pytest.param(
            answered(Status.DELETING),
            [resolved(Alert.STUCK, Status.DELETING, Status.PENDING)],
            id="DELETING",
        ),
        pytest.param(
            NOT_FOUND,
            [
                fired(Alert.NOT_FOUND, None, Status.PENDING),
                resolved(Alert.STUCK, None, Status.PENDING),
            ],
            id="404",
        ),
    ],
)
def test_stuck_resolves_once_the_status_leaves_provisioning(
    ending: Observation, expected_events: list[AlertEvent]
) -> None:
    stuck, _ = walk([(0.0, answered(Status.PENDING)), (STUCK_AFTER, answered(Status.PENDING))])

    ended = advance(stuck, ending, STUCK_AFTER + 60, DEFAULT_RULES)
    again = advance(ended.state, ending, STUCK_AFTER + 120, DEFAULT_RULES)

    assert ended.events == expected_events
    assert Alert.STUCK not in ended.state.firing
    assert again.events == []


def test_stuck_does_not_start_during_failed_polls_but_on_the_next_answer() -> None:
    state, failure_events = walk(
        [
            (0.0, answered(Status.PENDING)),
            (STUCK_AFTER, FAILED),
            (2 * STUCK_AFTER, FAILED),
        ],
        NEVER_UNREACHABLE,
    )
    assert failure_events == []
    assert state.firing == {}

    answered_again = advance(state, answered(Status.PENDING), 2 * STUCK_AFTER + 60, DEFAULT_RULES)

    assert answered_again.events == [fired(Alert.STUCK, Status.PENDING, Status.PENDING)]


def test_stuck_counts_the_whole_way_to_available_across_provisioning_steps() -> None:
    _, events = walk(
        [
            (0.0, answered(Status.NONE)),
            (STUCK_AFTER / 2, answered(Status.PENDING_ACCEPTANCE)),
            (STUCK_AFTER - 1, answered(Status.PENDING)),
            (STUCK_AFTER, answered(Status.PENDING)),
            (STUCK_AFTER + 60, answered(Status.PENDING_ACCEPTANCE)),
            (STUCK_AFTER + 120, answered(Status.AVAILABLE)),
            (STUCK_AFTER + 180, answered(Status.PENDING)),
            (2 * STUCK_AFTER + 179, answered(Status.PENDING)),
        ]
    )

    assert events == [
        fired(Alert.STUCK, Status.PENDING, Status.PENDING),
        resolved(Alert.STUCK, Status.AVAILABLE, Status.PENDING_ACCEPTANCE),
    ]


# repeat_interval_seconds


@pytest.mark.parametrize(
    ("observation", "settings", "expected_first_event"),
    [
        pytest.param(
            answered(Status.REJECTED),
            DEFAULT_RULES,
            fired(Alert.REJECTED, Status.REJECTED, None),
            id="rejected",
        ),
        pytest.param(
            answered(Status.AVAILABLE, "boom"),
            DEFAULT_RULES,
            fired(Alert.ERROR_MESSAGE, Status.AVAILABLE, None, "boom"),
            id="error-message",
        ),
        pytest.param(NOT_FOUND, DEFAULT_RULES, fired(Alert.NOT_FOUND, None, None), id="not-found"),
        pytest.param(
            FAILED,
            rules(unreachable_after_failures=1),
            fired(Alert.UNREACHABLE, None, None),
            id="unreachable",
        ),
    ],
)
def test_repeat_interval_zero_never_re_emits(
    observation: Observation, settings: AlertSettings, expected_first_event: AlertEvent
) -> None:
    state, events = walk([(3_600.0 * n, observation) for n in range(50)], settings)

    assert events == [expected_first_event]
    assert state.firing == {expected_first_event.alert: 0.0}


REPEAT_TIMES = [0.0, 30.0, 59.5, 60.0, 100.0, 119.5, 120.0, 500.0, 559.5, 560.0]
EMITTED_AT = [0.0, 60.0, 120.0, 500.0, 560.0]
LAST_EMITTED_AFTER_EACH = [0.0, 0.0, 0.0, 60.0, 60.0, 60.0, 120.0, 500.0, 500.0, 560.0]


@pytest.mark.parametrize(
    ("observation", "threshold", "alert", "reminder"),
    [
        pytest.param(
            answered(Status.REJECTED),
            3,
            Alert.REJECTED,
            fired(Alert.REJECTED, Status.REJECTED, Status.REJECTED),
            id="rejected",
        ),
        pytest.param(
            answered(Status.AVAILABLE, "boom"),
            3,
            Alert.ERROR_MESSAGE,
            fired(Alert.ERROR_MESSAGE, Status.AVAILABLE, Status.AVAILABLE, "boom"),
            id="error-message",
        ),
        pytest.param(
            NOT_FOUND, 3, Alert.NOT_FOUND, fired(Alert.NOT_FOUND, None, None), id="not-found"
        ),
        pytest.param(
            FAILED, 1, Alert.UNREACHABLE, fired(Alert.UNREACHABLE, None, None), id="unreachable"
        ),
    ],
)
def test_repeat_interval_re_emits_once_the_interval_has_passed(
    observation: Observation, threshold: int, alert: Alert, reminder: AlertEvent
) -> None:
    settings = rules(repeat_interval_seconds=60, unreachable_after_failures=threshold)
    state = EndpointState()
    emitted_at = []
    last_emitted = []
    reminders = []
    for now in REPEAT_TIMES:
        transition = advance(state, observation, now, settings)
        state = transition.state
        if transition.events:
            emitted_at.append(now)
            if now > 0:
                reminders.extend(transition.events)
        last_emitted.append(state.firing[alert])

    assert emitted_at == EMITTED_AT
    assert last_emitted == LAST_EMITTED_AFTER_EACH
    assert reminders == [reminder] * (len(EMITTED_AT) - 1)


def test_repeat_interval_reminds_of_alerts_kept_through_failed_polls() -> None:
    settings = rules(repeat_interval_seconds=60, unreachable_after_failures=1000)

    state, events = walk(
        [(0.0, answered(Status.REJECTED)), (30.0, FAILED), (60.0, FAILED), (90.0, FAILED)],
        settings,
    )

    assert events == [
        fired(Alert.REJECTED, Status.REJECTED, None),
        fired(Alert.REJECTED, Status.REJECTED, Status.REJECTED),
    ]
    assert state.firing == {Alert.REJECTED: 60.0}


def test_repeat_interval_does_not_repeat_a_resolution() -> None:
    settings = rules(repeat_interval_seconds=60)

    _, events = walk(
        [(0.0, answered(Status.REJECTED))]
        + [(30.0 + 60 * n, answered(Status.AVAILABLE)) for n in range(5)],
        settings,
    )

    assert events == [
        fired(Alert.REJECTED, Status.REJECTED, None),
        resolved(Alert.REJECTED, Status.AVAILABLE, Status.REJECTED),
    ]


# Whole lifetimes

PROVISIONED_THEN_REJECTED_THEN_UNREACHABLE = [
    (0.0, answered(Status.PENDING_ACCEPTANCE), {}),
    (600.0, answered(Status.PENDING), {}),
    (1_200.0, answered(Status.PENDING), {}),
    (2_400.0, answered(Status.PENDING), {Alert.STUCK: 2_400.0}),
    (3_000.0, answered(Status.AVAILABLE), {}),
    (3_600.0, answered(Status.REJECTED), {Alert.REJECTED: 3_600.0}),
    (3_660.0, FAILED, {Alert.REJECTED: 3_600.0}),
    (3_720.0, FAILED, {Alert.REJECTED: 3_600.0}),
    (3_780.0, FAILED, {Alert.REJECTED: 3_600.0, Alert.UNREACHABLE: 3_780.0}),
    (3_840.0, FAILED, {Alert.REJECTED: 3_600.0, Alert.UNREACHABLE: 3_780.0}),
    (3_900.0, answered(Status.AVAILABLE), {}),
    (4_500.0, answered(Status.AVAILABLE), {}),
]
PROVISIONED_THEN_REJECTED_THEN_UNREACHABLE_EVENTS = [
    fired(Alert.STUCK, Status.PENDING, Status.PENDING),
    resolved(Alert.STUCK, Status.AVAILABLE, Status.PENDING),
    fired(Alert.REJECTED, Status.REJECTED, Status.AVAILABLE),
    fired(Alert.UNREACHABLE, Status.REJECTED, Status.REJECTED),
    resolved(Alert.REJECTED, Status.AVAILABLE, Status.REJECTED),
    resolved(Alert.UNREACHABLE, Status.AVAILABLE, Status.REJECTED),
]

REJECTED_DELETED_AND_RECREATED = [
    (0.0, answered(Status.REJECTED, "quota"), {Alert.REJECTED: 0.0, Alert.ERROR_MESSAGE: 0.0}),
    (60.0, answered(Status.DELETING, delete_requested=True), {}),
    (120.0, NOT_FOUND, {Alert.NOT_FOUND: 120.0}),
    (180.0, NOT_FOUND, {Alert.NOT_FOUND: 120.0}),
    (240.0, answered(Status.PENDING_ACCEPTANCE), {}),
    (300.0, answered(Status.PENDING), {}),
    (360.0, answered(Status.AVAILABLE), {}),
]
REJECTED_DELETED_AND_RECREATED_EVENTS = [
    fired(Alert.REJECTED, Status.REJECTED, None, "quota"),
    fired(Alert.ERROR_MESSAGE, Status.REJECTED, None, "quota"),
    resolved(Alert.REJECTED, Status.DELETING, Status.REJECTED),
    resolved(Alert.ERROR_MESSAGE, Status.DELETING, Status.REJECTED),
    fired(Alert.NOT_FOUND, None, Status.DELETING),
    resolved(Alert.NOT_FOUND, Status.PENDING_ACCEPTANCE, None),
]

LIFETIMES = {
    "provisioned-rejected-unreachable-recovered": (
        PROVISIONED_THEN_REJECTED_THEN_UNREACHABLE,
        PROVISIONED_THEN_REJECTED_THEN_UNREACHABLE_EVENTS,
    ),
    "rejected-deleted-recreated": (
        REJECTED_DELETED_AND_RECREATED,
        REJECTED_DELETED_AND_RECREATED_EVENTS,
    ),
}
Lifetime = list[tuple[float, Observation, Mapping[Alert, float]]]


@pytest.mark.parametrize(
    ("lifetime", "expected_events"),
    [pytest.param(steps, events, id=name) for name, (steps, events) in LIFETIMES.items()],
)
def test_lifetime_emits_each_transition_once(
    lifetime: Lifetime, expected_events: list[AlertEvent]
) -> None:
    _, events = walk((now, observation) for now, observation, _ in lifetime)

    assert events == expected_events


@pytest.mark.parametrize(
    "lifetime", [pytest.param(steps, id=name) for name, (steps, _) in LIFETIMES.items()]
)
def test_lifetime_firing_map_after_each_step(lifetime: Lifetime) -> None:
    state = EndpointState()
    firing_after_each = []
    for now, observation, _ in lifetime:
        state = advance(state, observation, now, DEFAULT_RULES).state
        firing_after_each.append(dict(state.firing))

    assert firing_after_each == [expected for _, _, expected in lifetime]


# Add bookkeeping through advance


@pytest.mark.parametrize(
    ("observation", "expected_reported"),
    [
        pytest.param(NOT_FOUND, True, id="still-missing"),
        pytest.param(FAILED, True, id="failed-poll"),
        pytest.param(answered(Status.PENDING_ACCEPTANCE), False, id="found"),
        pytest.param(answered(Status.REJECTED, "quota"), False, id="found-failed"),
    ],
)
def test_dry_run_reported_resets_only_when_the_endpoint_is_found(
    observation: Observation, expected_reported: bool
) -> None:
    reported = EndpointState(missing=True, dry_run_reported=True)

    state = advance(reported, observation, 60.0, DEFAULT_RULES).state

    assert state.dry_run_reported is expected_reported


@pytest.mark.parametrize(
    "observation",
    [
        pytest.param(answered(Status.AVAILABLE), id="AVAILABLE"),
        pytest.param(answered(Status.REJECTED, "quota"), id="REJECTED"),
        pytest.param(answered(Status.DELETING, delete_requested=True), id="DELETING"),
        pytest.param(NOT_FOUND, id="404"),
        pytest.param(FAILED, id="failed"),
    ],
)
def test_advance_carries_add_bookkeeping_through_unchanged(observation: Observation) -> None:
    previous = EndpointState(added_by_monitor=True, add_attempts=2, recreate_deletes=1)

    state = advance(previous, observation, 60.0, DEFAULT_RULES).state

    assert state.added_by_monitor is True
    assert state.add_attempts == 2
    assert state.recreate_deletes == 1


# next_add_action

ADDING = AddPolicy(enabled=True)
DRY_RUN = AddPolicy(enabled=True, dry_run=True)
RECREATING = AddPolicy(enabled=True, recreate_failed=True)
DISABLED = AddPolicy(enabled=False, dry_run=True, recreate_failed=True)
FRESH = EndpointState()
ADDED = EndpointState(added_by_monitor=True, add_attempts=1)
REJECTED_ANSWER = answered(Status.REJECTED)
ERROR_ANSWER = answered(Status.AVAILABLE, "subnet gone")
HEALTHY_ANSWER = answered(Status.AVAILABLE)


@pytest.mark.parametrize(
    ("policy", "state", "observation", "expected"),
    [
        pytest.param(DISABLED, FRESH, NOT_FOUND, AddAction.NOTHING, id="disabled-404"),
        pytest.param(DISABLED, ADDED, REJECTED_ANSWER, AddAction.NOTHING, id="disabled-rejected"),
        pytest.param(DISABLED, ADDED, FAILED, AddAction.NOTHING, id="disabled-failed"),
        pytest.param(ADDING, FRESH, NOT_FOUND, AddAction.ADD, id="404-first-attempt"),
        pytest.param(
            ADDING, EndpointState(add_attempts=2), NOT_FOUND, AddAction.ADD, id="404-last-attempt"
        ),
        pytest.param(
            ADDING,
            EndpointState(add_attempts=3),
            NOT_FOUND,
            AddAction.NOTHING,
            id="404-attempts-used-up",
        ),
        pytest.param(
            AddPolicy(enabled=True, max_attempts=1),
            EndpointState(add_attempts=1),
            NOT_FOUND,
            AddAction.NOTHING,
            id="404-single-attempt-used",
        ),
        pytest.param(
            AddPolicy(enabled=True, max_attempts=5),
            EndpointState(add_attempts=4),
            NOT_FOUND,
            AddAction.ADD,
            id="404-higher-max-attempts",
        ),
        pytest.param(ADDING, ADDED, NOT_FOUND, AddAction.ADD, id="404-after-own-add"),
        pytest.param(ADDING, FRESH, HEALTHY_ANSWER, AddAction.NOTHING, id="found"),
        pytest.param(ADDING, FRESH, FAILED, AddAction.NOTHING, id="failed-poll"),
        pytest.param(DRY_RUN, FRESH, NOT_FOUND, AddAction.DRY_RUN, id="dry-run-404"),
        pytest.param(
            DRY_RUN,
            EndpointState(dry_run_reported=True),
            NOT_FOUND,
            AddAction.NOTHING,
            id="dry-run-404-already-reported",
        ),
        pytest.param(
            DRY_RUN,
            EndpointState(add_attempts=3),
            NOT_FOUND,
            AddAction.DRY_RUN,
            id="dry-run-ignores-attempts",
        ),
        pytest.param(DRY_RUN, FRESH, FAILED, AddAction.NOTHING, id="dry-run-failed-poll"),
        pytest.param(
            AddPolicy(enabled=True, dry_run=True, recreate_failed=True),
            ADDED,
            REJECTED_ANSWER,
            AddAction.NOTHING,
            id="dry-run-never-deletes",
        ),
        pytest.param(
            RECREATING,
            ADDED,
            REJECTED_ANSWER,
            AddAction.DELETE_FOR_RECREATE,
            id="recreate-rejected",
        ),
        pytest.param(
            RECREATING,
            ADDED,
            ERROR_ANSWER,
            AddAction.DELETE_FOR_RECREATE,
            id="recreate-available-with-error-message",
        ),
        pytest.param(
            RECREATING,
            ADDED,
            answered(Status.PENDING, "subnet gone"),
            AddAction.DELETE_FOR_RECREATE,
            id="recreate-pending-with-error-message",
        ),
        pytest.param(RECREATING, ADDED, HEALTHY_ANSWER, AddAction.NOTHING, id="recreate-healthy"),
        pytest.param(
            RECREATING, ADDED, answered(Status.PENDING), AddAction.NOTHING, id="recreate-pending"
        ),
        pytest.param(
            RECREATING,
            ADDED,
            answered(Status.REJECTED, delete_requested=True),
            AddAction.NOTHING,
            id="recreate-rejected-delete-requested",
        ),
        pytest.param(
            RECREATING,
            ADDED,
            answered(Status.AVAILABLE, "subnet gone", delete_requested=True),
            AddAction.NOTHING,
            id="recreate-error-delete-requested",
        ),
        pytest.param(
            RECREATING,
            ADDED,
            answered(Status.DELETING, "subnet gone"),
            AddAction.NOTHING,
            id="recreate-deleting-with-error-message",
        ),
        pytest.param(
            RECREATING,
            ADDED,
            answered(Status.DELETED, "group deleted"),
            AddAction.NOTHING,
            id="recreate-deleted-with-error-message",
        ),
        pytest.param(RECREATING, ADDED, FAILED, AddAction.NOTHING, id="recreate-failed-poll"),
        pytest.param(RECREATING, ADDED, NOT_FOUND, AddAction.ADD, id="recreate-404-after-delete"),
        pytest.param(
            RECREATING,
            EndpointState(add_attempts=1),
            REJECTED_ANSWER,
            AddAction.NOTHING,
            id="recreate-not-added-by-monitor",
        ),
        pytest.param(
            RECREATING, FRESH, REJECTED_ANSWER, AddAction.NOTHING, id="recreate-found-rejected"
        ),
        pytest.param(ADDING, ADDED, REJECTED_ANSWER, AddAction.NOTHING, id="recreate-off-rejected"),
        pytest.param(
            RECREATING,
            EndpointState(added_by_monitor=True, add_attempts=3),
            REJECTED_ANSWER,
            AddAction.NOTHING,
            id="recreate-add-attempts-used-up",
        ),
        pytest.param(
            RECREATING,
            EndpointState(added_by_monitor=True, add_attempts=2, recreate_deletes=2),
            REJECTED_ANSWER,
            AddAction.DELETE_FOR_RECREATE,
            id="recreate-last-delete",
        ),
        pytest.param(
            RECREATING,
            EndpointState(added_by_monitor=True, add_attempts=2, recreate_deletes=3),
            REJECTED_ANSWER,
            AddAction.NOTHING,
            id="recreate-deletes-used-up",
        ),
    ],
)
def test_next_add_action(
    policy: AddPolicy, state: EndpointState, observation: Observation, expected: AddAction
) -> None:
    assert next_add_action(state, observation, policy) is expected


@pytest.mark.parametrize(
    ("globally_enabled", "override", "expected"),
    [
        pytest.param(False, None, False, id="global-off-no-override"),
        pytest.param(True, None, True, id="global-on-no-override"),
        pytest.param(False, True, True, id="global-off-override-on"),
        pytest.param(True, False, False, id="global-on-override-off"),
        pytest.param(True, True, True, id="global-on-override-on"),
        pytest.param(False, False, False, id="global-off-override-off"),
    ],
)
def test_policy_for_endpoint_prefers_the_endpoint_override(
    globally_enabled: bool, override: bool | None, expected: bool
) -> None:
    config = MonitorConfig.model_validate(
        config_document(
            add_missing={
                "enabled": globally_enabled,
                "dry_run": True,
                "recreate_failed": True,
                "max_attempts": 7,
            },
            endpoints=[endpoint_entry(add_if_missing=override)],
        )
    )

    policy = AddPolicy.for_endpoint(config, config.endpoints[0])

    assert policy == AddPolicy(enabled=expected, dry_run=True, recreate_failed=True, max_attempts=7)


def test_policy_for_endpoint_applies_each_endpoints_own_override() -> None:
    config = MonitorConfig.model_validate(
        config_document(
            add_missing={"enabled": True},
            endpoints=[
                endpoint_entry(),
                endpoint_entry(interface_endpoint_id="vpce-0123abcd", add_if_missing=False),
            ],
        )
    )

    enabled = [AddPolicy.for_endpoint(config, endpoint).enabled for endpoint in config.endpoints]

    assert enabled == [True, False]


def test_policy_defaults_without_an_add_missing_section() -> None:
    config = MonitorConfig.model_validate(config_document())

    assert AddPolicy.for_endpoint(config, config.endpoints[0]) == AddPolicy(
        enabled=False, dry_run=False, recreate_failed=False, max_attempts=3
    )


def test_forgetting_an_endpoint_resolves_exactly_its_firing_alerts() -> None:
    state = EndpointState(
        status=Status.REJECTED,
        raw_status="REJECTED",
        error_message="no subnet",
        firing={Alert.REJECTED: 10.0, Alert.ERROR_MESSAGE: 10.0},
    )

    assert forget(state) == [
        AlertEvent(Alert.REJECTED, False, Status.REJECTED, Status.REJECTED, "no subnet"),
        AlertEvent(Alert.ERROR_MESSAGE, False, Status.REJECTED, Status.REJECTED, "no subnet"),
    ]
    assert forget(EndpointState(status=Status.AVAILABLE)) == []


def test_not_found_carries_why_the_endpoint_was_not_added_until_it_is_found() -> None:
    refused = Observation.not_found("adding it failed: 403 FORBIDDEN")

    first = advance(EndpointState(), refused, 10.0, rules())
    again = advance(first.state, Observation.not_found(), 20.0, rules(repeat_interval_seconds=5))
    found = advance(again.state, answered(Status.AVAILABLE), 30.0, rules())

    assert first.events == [
        AlertEvent(Alert.NOT_FOUND, True, None, None, "adding it failed: 403 FORBIDDEN")
    ]
    assert again.events == [
        AlertEvent(Alert.NOT_FOUND, True, None, None, "adding it failed: 403 FORBIDDEN")
    ]
    assert found.events == [AlertEvent(Alert.NOT_FOUND, False, Status.AVAILABLE, None, None)]
    assert found.state.missing_reason is None


# Azure and GCP (v2)


@pytest.mark.parametrize("status", [Status.FAILED])
def test_failed_fires_failed_like_rejected_fires_rejected(status: Status) -> None:
    transition = advance(EndpointState(), answered(status), 0.0, DEFAULT_RULES)

    assert transition.events == [fired(Alert.FAILED, status, None)]
    resolved_by = advance(transition.state, answered(Status.AVAILABLE), 60.0, DEFAULT_RULES)
    assert resolved_by.events == [resolved(Alert.FAILED, Status.AVAILABLE, status)]


@pytest.mark.parametrize("status", [Status.INITIATING, Status.VERIFIED])
def test_initiating_and_verified_count_towards_stuck(status: Status) -> None:
    settings = rules(stuck_after_seconds=60)
    state = after(answered(Status.INITIATING), settings=settings)

    transition = advance(state, answered(status), 60.0, settings)

    assert [event.alert for event in transition.events] == [Alert.STUCK]


def service_answer(status: str, error_message: str | None = None) -> ServiceObservation:
    return ServiceObservation(
        answer=EndpointService(
            service_id="65a1b2c3d4e5f60718293a4b",
            cloud_provider=CloudProvider.AZURE,
            region="US_EAST_2",
            status=ServiceStatus.parse(status, CloudProvider.AZURE),
            raw_status=status,
            error_message=error_message,
            endpoint_ids=(),
        )
    )


def test_a_failed_service_with_a_message_fires_both_alerts_once_and_resolves_them() -> None:
    failing = advance_service(
        ServiceState(), service_answer("FAILED", "no subnet"), 0.0, DEFAULT_RULES
    )
    again = advance_service(
        failing.state, service_answer("FAILED", "no subnet"), 60.0, DEFAULT_RULES
    )
    healthy = advance_service(again.state, service_answer("AVAILABLE"), 120.0, DEFAULT_RULES)

    assert [(event.alert, event.firing) for event in failing.events] == [
        (Alert.SERVICE_FAILED, True),
        (Alert.SERVICE_ERROR_MESSAGE, True),
    ]
    assert failing.events[0].error_message == "no subnet"
    assert again.events == []
    assert [(event.alert, event.firing) for event in healthy.events] == [
        (Alert.SERVICE_FAILED, False),
        (Alert.SERVICE_ERROR_MESSAGE, False),
    ]
    assert healthy.events[0].previous_status is ServiceStatus.FAILED


def test_a_failed_service_poll_keeps_its_alerts_and_status() -> None:
    failing = advance_service(ServiceState(), service_answer("FAILED"), 0.0, DEFAULT_RULES)

    unanswered = advance_service(
        failing.state, ServiceObservation(failure="timeout"), 60.0, DEFAULT_RULES
    )

    assert unanswered.events == []
    assert unanswered.state.status is ServiceStatus.FAILED
    assert not unanswered.state.up
    assert forget_service(unanswered.state)[0].alert is Alert.SERVICE_FAILED


def test_a_status_of_another_provider_is_unknown() -> None:
    for provider in CloudProvider:  # the spec gives endpoint services one enum for all
        assert ServiceStatus.parse("WAITING_FOR_USER", provider) is ServiceStatus.WAITING_FOR_USER
    assert ServiceStatus.parse("VERIFIED", CloudProvider.GCP) is ServiceStatus.UNKNOWN
    assert Status.parse("VERIFIED", CloudProvider.AZURE) is Status.UNKNOWN
    assert Status.parse("VERIFIED", CloudProvider.GCP) is Status.VERIFIED
    assert Status.parse("REJECTED", CloudProvider.GCP) is Status.UNKNOWN
