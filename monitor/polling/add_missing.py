"""Add-on-missing: carrying out what ``state.next_add_action`` decided, against Atlas.

The decision (add, report a dry run, delete for a recreate, or nothing) is pure and lives in
``monitor.polling.state``; this module makes the call, logs each step, counts the outcome, and
returns the bookkeeping and the observation the state machine should see next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog

from monitor.atlas import AtlasApiError, AtlasClient, AtlasError
from monitor.config import EndpointConfig, endpoint_identity
from monitor.exposition import MonitorMetrics
from monitor.polling.state import AddAction, AddPolicy, EndpointState, Observation, next_add_action

log = structlog.get_logger(__name__)

DRY_RUN_REASON = "not added: add_missing.dry_run is on"
ADD_FAILED_REASON = "adding it failed"

BeforeRequest = Callable[[EndpointState], Awaitable[None]]
"""Told the bookkeeping (the attempt or delete counted) before a POST or DELETE is sent."""


async def _nothing_to_record(state: EndpointState) -> None:
    return None


async def add_if_missing(
    client: AtlasClient,
    endpoint: EndpointConfig,
    policy: AddPolicy,
    state: EndpointState,
    observation: Observation,
    metrics: MonitorMetrics,
    before_request: BeforeRequest = _nothing_to_record,
) -> tuple[EndpointState, Observation]:
    """A successful POST replaces the 404 with the new endpoint's answer, so the endpoint is
    watched (and no ``not_found`` fires) from this very cycle on.

    ``before_request`` gets each counted attempt before the request goes out, so a state
    store can make it durable first: a crash then costs at most an attempt never made, never
    a POST beyond ``max_attempts``."""
    action = next_add_action(state, observation, policy)
    identity = endpoint_identity(endpoint)
    if action is AddAction.DRY_RUN:
        log.info("endpoint_add_dry_run", **identity, would="POST")
        metrics.endpoints_added.labels("dry_run").inc()
        return replace(state, dry_run_reported=True), Observation.not_found(DRY_RUN_REASON)
    if action is AddAction.ADD:
        attempt = state.add_attempts + 1
        state = replace(state, add_attempts=attempt)
        progress = {"attempt": attempt, "max_attempts": policy.max_attempts}
        await before_request(state)
        try:
            answer = await client.add_interface_endpoint(endpoint.ref)
        except AtlasError as error:
            metrics.endpoints_added.labels("failed").inc()
            log.error("endpoint_add_failed", **identity, **progress, **_error_fields(error))
            return state, Observation.not_found(f"{ADD_FAILED_REASON}: {error.summary}")
        metrics.endpoints_added.labels("added").inc()
        log.info(
            "endpoint_added",
            **identity,
            **progress,
            connection_status=answer.connection_status.value,
        )
        return replace(state, added_by_monitor=True), Observation.answered(answer)
    if action is AddAction.DELETE_FOR_RECREATE:
        state = replace(state, recreate_deletes=state.recreate_deletes + 1)
        await before_request(state)
        return await _delete_for_recreate(client, endpoint, policy, state, observation), observation
    return state, observation


async def _delete_for_recreate(
    client: AtlasClient,
    endpoint: EndpointConfig,
    policy: AddPolicy,
    state: EndpointState,
    observation: Observation,
) -> EndpointState:
    """Step one of a recreate (``state`` counts it already); step two is the ADD once Atlas
    answers 404 for it."""
    failed = observation.answer
    assert failed is not None
    context = {
        **endpoint_identity(endpoint),
        "connection_status": failed.connection_status.value,
        "error_message": failed.error_message,
    }
    try:
        existed = await client.delete_interface_endpoint(endpoint.ref)
    except AtlasError as error:
        log.error("endpoint_recreate_delete_failed", **context, **_error_fields(error))
        return state
    log.warning(
        "endpoint_deleted_for_recreate",
        **context,
        existed=existed,
        deletes=state.recreate_deletes,
        max_attempts=policy.max_attempts,
    )
    return state


def _error_fields(error: AtlasError) -> dict[str, Any]:
    """Atlas' own words for the failure, for the operator who has to fix it."""
    if isinstance(error, AtlasApiError):
        return {"cause": error.summary, "status": error.status, "error_code": error.error_code}
    return {"cause": error.summary}
