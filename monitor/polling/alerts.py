"""Alert names and the alert log line itself; when alerts fire is decided in ``state``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import structlog

from monitor.atlas import ServiceKey
from monitor.config import EndpointConfig
from monitor.providers import CloudProvider, ConnectionStatus, ServiceStatus

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
    FAILED = "failed"
    """Azure's and GCP's word for an endpoint that will not connect, as REJECTED is AWS'."""
    SERVICE_FAILED = "service_failed"
    SERVICE_ERROR_MESSAGE = "service_error_message"


ENDPOINT_ALERTS = (
    AlertName.REJECTED,
    AlertName.FAILED,
    AlertName.ERROR_MESSAGE,
    AlertName.NOT_FOUND,
    AlertName.UNREACHABLE,
    AlertName.STUCK,
)
SERVICE_ALERTS = (AlertName.SERVICE_FAILED, AlertName.SERVICE_ERROR_MESSAGE)
"""Alerts about an endpoint service (v2), which every endpoint behind it depends on."""


@dataclass(frozen=True)
class AlertEvent:
    """One alert line to emit; the endpoint's ids and name are added by whoever logs it."""

    alert: AlertName
    firing: bool
    connection_status: ConnectionStatus | ServiceStatus | None
    previous_status: ConnectionStatus | ServiceStatus | None
    error_message: str | None


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
    _write(event.firing, fields)


def emit_service_alert(service: ServiceKey, event: AlertEvent) -> None:
    """The same fields as an endpoint's alert, so one alert pipeline handles both; there is
    no endpoint, and the name says which service it is."""
    _write(
        event.firing,
        {
            "alert": event.alert.value,
            "state": "firing" if event.firing else "resolved",
            "group_id": service.group_id,
            "private_link_id": service.service_id,
            "interface_endpoint_id": None,
            "name": service_display_name(service.cloud_provider, service.service_id),
            "connection_status": _status(event.connection_status),
            "previous_status": _status(event.previous_status),
            "error_message": event.error_message,
        },
    )


def service_display_name(provider: CloudProvider, service_id: str) -> str:
    return f"{provider} endpoint service {service_id}"


def _write(firing: bool, fields: Mapping[str, object]) -> None:
    if firing:
        _alert_log.error(ALERT_EVENT, **fields)
    else:
        _alert_log.info(ALERT_EVENT, **fields)


def _status(status: ConnectionStatus | ServiceStatus | None) -> str | None:
    return None if status is None else status.value
