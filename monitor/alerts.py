"""Alert names and the conditions a single observation shows by itself."""

from __future__ import annotations

from enum import StrEnum

from monitor.atlas import AtlasNotFoundError, ConnectionStatus, InterfaceEndpoint


class AlertName(StrEnum):
    REJECTED = "rejected"
    ERROR_MESSAGE = "error_message"
    NOT_FOUND = "not_found"
    UNREACHABLE = "unreachable"
    STUCK = "stuck"


def observed_conditions(
    answer: InterfaceEndpoint | None, error: Exception | None
) -> frozenset[AlertName]:
    """Alert conditions visible in one poll, with no history.

    A failed poll (other than 404) counts as ``unreachable`` here; the daemon instead waits
    for several consecutive failures, and ``stuck`` needs time in status, so both of those
    thresholds are applied where history is kept.
    """
    if answer is None:
        if isinstance(error, AtlasNotFoundError):
            return frozenset({AlertName.NOT_FOUND})
        return frozenset({AlertName.UNREACHABLE})
    conditions = set()
    if answer.connection_status is ConnectionStatus.REJECTED:
        conditions.add(AlertName.REJECTED)
    if answer.error_message is not None:
        conditions.add(AlertName.ERROR_MESSAGE)
    return frozenset(conditions)
