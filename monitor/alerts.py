"""Alert names and the alert log line itself; when alerts fire is decided in ``monitor.state``."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from monitor.atlas import ConnectionStatus

if TYPE_CHECKING:
    from monitor.config import EndpointConfig
    from monitor.state import AlertEvent

ALERT_EVENT = "alert"

# Alerts are the product: they are written whatever log.level says, so an operator who
# turns logging down to "error" still sees endpoints recover.
_alert_log = structlog.wrap_logger(
    None, wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
)


class AlertName(StrEnum):
    REJECTED = "rejected"
    ERROR_MESSAGE = "error_message"
    NOT_FOUND = "not_found"
    UNREACHABLE = "unreachable"
    STUCK = "stuck"


def emit_alert(endpoint: EndpointConfig, event: AlertEvent) -> None:
    """One JSON line with exactly the contract's fields; level and timestamp come from
    the logging pipeline (error when firing, info when resolved)."""
    fields = {
        "alert": event.alert.value,
        "state": "firing" if event.firing else "resolved",
        "group_id": endpoint.group_id,
        "private_link_id": endpoint.private_link_id,
        "interface_endpoint_id": endpoint.interface_endpoint_id,
        "name": endpoint.display_name,
        "connection_status": _status(event.connection_status),
        "previous_status": _status(event.previous_status),
        "error_message": event.error_message,
    }
    if event.firing:
        _alert_log.error(ALERT_EVENT, **fields)
    else:
        _alert_log.info(ALERT_EVENT, **fields)


def _status(status: ConnectionStatus | None) -> str | None:
    return None if status is None else status.value
