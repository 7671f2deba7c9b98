"""Per-endpoint state and the rules that move it forward, one observation at a time.

Everything here is pure: the caller passes the time and the observation in, and gets the
next state and the alerts to emit back. That keeps the rules an operator relies on
("fire once, resolve once", "stuck after N seconds", "add once") testable without a
clock, a network or a log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Generic, TypeVar

from monitor.atlas import EndpointService, InterfaceEndpoint
from monitor.config import AlertSettings, EndpointConfig, MonitorConfig
from monitor.polling.alerts import ENDPOINT_ALERTS, SERVICE_ALERTS, AlertEvent, AlertName
from monitor.providers import (
    PROVISIONING_STATUSES,
    ConnectionStatus,
    ServiceStatus,
)

ANSWER_CONDITIONS = frozenset(
    {
        AlertName.REJECTED,
        AlertName.FAILED,
        AlertName.ERROR_MESSAGE,
        AlertName.NOT_FOUND,
        AlertName.STUCK,
    }
)
"""Conditions only an answer from Atlas can start or end; a failed poll leaves them as they are."""


@dataclass(frozen=True)
class Observation:
    """What one poll learned about one endpoint: its document, that it is missing, or why
    there is no answer at all. Build it with the class methods."""

    answer: InterfaceEndpoint | None = None
    missing: bool = False
    missing_reason: str | None = None
    """Why a missing endpoint was not added (a refused POST, a dry run), for the alert."""
    failure: str | None = None
    local_failure: bool = False
    """The poll failed on this host (out of descriptors...), not at Atlas: it must not bring
    the ``unreachable`` alert closer (see monitor.atlas.errors.LocalResourceError)."""

    @classmethod
    def answered(cls, answer: InterfaceEndpoint) -> Observation:
        return cls(answer=answer)

    @classmethod
    def not_found(cls, reason: str | None = None) -> Observation:
        return cls(missing=True, missing_reason=reason)

    @classmethod
    def failed(cls, reason: str, *, local: bool = False) -> Observation:
        return cls(failure=reason, local_failure=local)


@dataclass(frozen=True)
class EndpointState:
    """Everything remembered about one endpoint between polls.

    The status fields keep the last known answer while polls fail, so dashboards show what
    Atlas last said (and, from ``status_since``, for how long) rather than nothing.
    """

    status: ConnectionStatus | None = None
    raw_status: str | None = None
    status_since: float | None = None
    provisioning_since: float | None = None
    """When the endpoint entered NONE/PENDING_ACCEPTANCE/PENDING; moving between those three
    keeps it, because "stuck" means "not AVAILABLE yet", whatever step it is on."""
    error_message: str | None = None
    delete_requested: bool = False
    up: bool = False
    missing: bool = False
    missing_reason: str | None = None
    consecutive_failures: int = 0
    last_success: float | None = None
    last_failure: str | None = None
    firing: Mapping[AlertName, float] = field(default_factory=dict)
    """Alerts currently firing, each with the time it was last emitted."""
    added_by_monitor: bool = False
    add_attempts: int = 0
    """POSTs made for the endpoint, successful or not (by earlier processes too, when a
    state file keeps them)."""
    recreate_deletes: int = 0
    dry_run_reported: bool = False


_State = TypeVar("_State")


@dataclass(frozen=True)
class Transition(Generic[_State]):
    """An endpoint's or an endpoint service's next state and the alert lines it calls for."""

    state: _State
    events: list[AlertEvent]


def advance(
    previous: EndpointState, observation: Observation, now: float, rules: AlertSettings
) -> Transition[EndpointState]:
    """The state after ``observation`` and the alert lines it calls for.

    An alert fires when its condition starts (the very first observation included), then
    stays quiet until it resolves, unless ``rules.repeat_interval_seconds`` asks for
    reminders.
    """
    state = _observe(previous, observation, now)
    conditions = _conditions(previous, state, observation, now, rules)
    firing, changes = _alert_changes(ENDPOINT_ALERTS, previous.firing, conditions, now, rules)
    events = [
        _event(alert, firing=fires, previous=previous, state=state) for alert, fires in changes
    ]
    return Transition(replace(state, firing=firing), events)


def _alert_changes(
    alerts: tuple[AlertName, ...],
    was_firing: Mapping[AlertName, float],
    conditions: set[AlertName],
    now: float,
    rules: AlertSettings,
) -> tuple[dict[AlertName, float], list[tuple[AlertName, bool]]]:
    """Fire once when a condition starts, resolve once when it ends, remind if asked: the
    alerts firing afterwards (each with when it was last emitted) and the lines owed."""
    firing = dict(was_firing)
    changes = []
    for alert in alerts:
        if alert in conditions and (
            alert not in was_firing or _reminder_due(was_firing[alert], now, rules)
        ):
            firing[alert] = now
            changes.append((alert, True))
        elif alert not in conditions and alert in was_firing:
            del firing[alert]
            changes.append((alert, False))
    return firing, changes


def forget(state: EndpointState) -> list[AlertEvent]:
    """The resolutions owed when an endpoint stops being watched (removed by a reload):
    nobody may be left waiting for an alert that can no longer end."""
    return [
        _event(alert, firing=False, previous=state, state=state)
        for alert in ENDPOINT_ALERTS
        if alert in state.firing
    ]


def _observe(previous: EndpointState, observation: Observation, now: float) -> EndpointState:
    answer = observation.answer
    if answer is not None:
        same_status = answer.raw_status == previous.raw_status
        provisioning = answer.connection_status in PROVISIONING_STATUSES
        return replace(
            previous,
            status=answer.connection_status,
            raw_status=answer.raw_status,
            status_since=previous.status_since if same_status else now,
            provisioning_since=_provisioning_since(previous, now) if provisioning else None,
            error_message=answer.error_message,
            delete_requested=answer.delete_requested,
            up=True,
            missing=False,
            missing_reason=None,
            consecutive_failures=0,
            last_success=now,
            last_failure=None,
            dry_run_reported=False,
        )
    if observation.missing:
        # The endpoint does not exist, so it has no status; the gauges drop its status series.
        return replace(
            previous,
            status=None,
            raw_status=None,
            status_since=None,
            provisioning_since=None,
            error_message=None,
            delete_requested=False,
            up=False,
            missing=True,
            missing_reason=observation.missing_reason or previous.missing_reason,
            consecutive_failures=0,
            last_failure="not found in Atlas",
        )
    return replace(
        previous,
        up=False,
        consecutive_failures=previous.consecutive_failures + (not observation.local_failure),
        last_failure=observation.failure,
    )


def _provisioning_since(previous: EndpointState, now: float) -> float:
    return now if previous.provisioning_since is None else previous.provisioning_since


def _conditions(
    previous: EndpointState,
    state: EndpointState,
    observation: Observation,
    now: float,
    rules: AlertSettings,
) -> set[AlertName]:
    conditions: set[AlertName] = set()
    if observation.failure is not None:
        # No news about the endpoint itself: what was firing keeps firing, nothing new starts.
        conditions |= ANSWER_CONDITIONS & previous.firing.keys()
    else:
        if state.status is ConnectionStatus.REJECTED:
            conditions.add(AlertName.REJECTED)
        if state.status is ConnectionStatus.FAILED:
            conditions.add(AlertName.FAILED)
        if state.error_message is not None:
            conditions.add(AlertName.ERROR_MESSAGE)
        if state.missing:
            conditions.add(AlertName.NOT_FOUND)
        if _stuck(state, now, rules):
            conditions.add(AlertName.STUCK)
    if state.consecutive_failures >= rules.unreachable_after_failures:
        conditions.add(AlertName.UNREACHABLE)
    return conditions


def _stuck(state: EndpointState, now: float, rules: AlertSettings) -> bool:
    if not rules.stuck_after_seconds or state.provisioning_since is None:
        return False
    return now - state.provisioning_since >= rules.stuck_after_seconds


def _reminder_due(last_emitted: float, now: float, rules: AlertSettings) -> bool:
    interval = rules.repeat_interval_seconds
    return bool(interval) and now - last_emitted >= interval


def _event(
    alert: AlertName, *, firing: bool, previous: EndpointState, state: EndpointState
) -> AlertEvent:
    # A missing endpoint has no errorMessage of its own; its not_found alert carries why it
    # was not added instead (Atlas' reason for a refused POST), which is what the operator
    # has to fix.
    missing_reason = alert is AlertName.NOT_FOUND and state.missing
    return AlertEvent(
        alert=alert,
        firing=firing,
        connection_status=state.status,
        previous_status=previous.status,
        error_message=state.missing_reason if missing_reason else state.error_message,
    )


class AddAction(StrEnum):
    NOTHING = "nothing"
    ADD = "add"
    """POST the endpoint."""
    DRY_RUN = "dry_run"
    """Report the POST that would be made, once per absence."""
    DELETE_FOR_RECREATE = "delete_for_recreate"
    """DELETE an endpoint this monitor added that failed; once Atlas has removed it, the
    next 404 brings the ADD that recreates it."""


@dataclass(frozen=True)
class AddPolicy:
    """The add-on-missing settings as they apply to one endpoint."""

    enabled: bool
    dry_run: bool = False
    recreate_failed: bool = False
    max_attempts: int = 3

    @classmethod
    def for_endpoint(cls, config: MonitorConfig, endpoint: EndpointConfig) -> AddPolicy:
        settings = config.add_missing
        return cls(
            enabled=config.wants_add(endpoint),
            dry_run=settings.dry_run,
            recreate_failed=settings.recreate_failed,
            max_attempts=settings.max_attempts,
        )


def next_add_action(state: EndpointState, observation: Observation, policy: AddPolicy) -> AddAction:
    """What add-on-missing does after this poll, given what it already did.

    Every POST counts against ``max_attempts`` for the life of the process (of every
    process, with a state file), failed or not, so a project where adding keeps failing is
    not hammered forever, even by a crash loop.
    """
    if not policy.enabled:
        return AddAction.NOTHING
    if observation.missing:
        if policy.dry_run:
            return AddAction.NOTHING if state.dry_run_reported else AddAction.DRY_RUN
        return AddAction.ADD if state.add_attempts < policy.max_attempts else AddAction.NOTHING
    answer = observation.answer
    if (
        answer is not None
        and policy.recreate_failed
        and not policy.dry_run
        and state.added_by_monitor
        and _failed(answer)
        and state.add_attempts < policy.max_attempts
        and state.recreate_deletes < policy.max_attempts
    ):
        return AddAction.DELETE_FOR_RECREATE
    return AddAction.NOTHING


_LEAVING = (ConnectionStatus.DELETING, ConnectionStatus.DELETED)


def _failed(answer: InterfaceEndpoint) -> bool:
    """REJECTED (or FAILED) or an errorMessage, and not already on its way out (or gone)."""
    if answer.delete_requested or answer.connection_status in _LEAVING:
        return False
    return (
        answer.connection_status in (ConnectionStatus.REJECTED, ConnectionStatus.FAILED)
        or answer.error_message is not None
    )


@dataclass(frozen=True)
class ServiceObservation:
    answer: EndpointService | None = None
    missing: bool = False
    failure: str | None = None


@dataclass(frozen=True)
class ServiceState:
    status: ServiceStatus | None = None
    raw_status: str | None = None
    region: str | None = None
    error_message: str | None = None
    up: bool = False
    missing: bool = False
    last_failure: str | None = None
    firing: Mapping[AlertName, float] = field(default_factory=dict)


def advance_service(
    previous: ServiceState, observation: ServiceObservation, now: float, rules: AlertSettings
) -> Transition[ServiceState]:
    """An endpoint service's next state and alert lines, by the same fire-once rules as an
    endpoint's. A failed poll keeps what was known, and what was firing."""
    answer = observation.answer
    if answer is not None:
        state = replace(
            previous,
            status=answer.status,
            raw_status=answer.raw_status,
            region=answer.region,
            error_message=answer.error_message,
            up=True,
            missing=False,
            last_failure=None,
        )
    elif observation.missing:
        state = ServiceState(missing=True, last_failure="not found in Atlas")
    else:
        state = replace(previous, up=False, last_failure=observation.failure)
    conditions: set[AlertName] = set()
    if observation.failure is not None:
        conditions |= previous.firing.keys()
    else:
        if state.status is ServiceStatus.FAILED:
            conditions.add(AlertName.SERVICE_FAILED)
        if state.error_message is not None:
            conditions.add(AlertName.SERVICE_ERROR_MESSAGE)
    firing, changes = _alert_changes(SERVICE_ALERTS, previous.firing, conditions, now, rules)
    events = [_service_event(alert, fires, previous, state) for alert, fires in changes]
    return Transition(replace(state, firing=firing), events)


def forget_service(state: ServiceState) -> list[AlertEvent]:
    """Resolutions owed when no watched endpoint uses the service any more."""
    return [_service_event(alert, False, state, state) for alert in state.firing]


def _service_event(
    alert: AlertName, firing: bool, previous: ServiceState, state: ServiceState
) -> AlertEvent:
    return AlertEvent(
        alert=alert,
        firing=firing,
        connection_status=state.status,
        previous_status=previous.status,
        error_message=state.error_message,
    )
