"""The alert log line: the contract's fields, whatever the log level."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

from structlog.testing import capture_logs

from monitor.config import EndpointConfig
from monitor.logs import configure_logging
from monitor.polling.alerts import AlertEvent, AlertName, emit_alert
from monitor.providers import ConnectionStatus
from tests.helpers import ENDPOINT_ID, GROUP_ID, PRIVATE_LINK_ID, endpoint_entry

CONTRACT_FIELDS = {
    "event",
    "alert",
    "state",
    "group_id",
    "private_link_id",
    "interface_endpoint_id",
    "name",
    "connection_status",
    "previous_status",
    "error_message",
    "level",
    "timestamp",
}


def test_alert_lines_carry_exactly_the_contract_fields_and_ignore_the_log_level() -> None:
    stream = io.StringIO()
    configure_logging("error", "json", stream=stream)
    endpoint = EndpointConfig.model_validate(endpoint_entry(name="orders-prod"))
    rejected, pending, available = (
        ConnectionStatus.REJECTED,
        ConnectionStatus.PENDING,
        ConnectionStatus.AVAILABLE,
    )
    emit_alert(endpoint, AlertEvent(AlertName.REJECTED, True, rejected, pending, None))
    emit_alert(endpoint, AlertEvent(AlertName.REJECTED, False, available, rejected, None))
    firing, resolved = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(firing) == CONTRACT_FIELDS
    assert firing == {
        "event": "alert",
        "alert": "rejected",
        "state": "firing",
        "group_id": GROUP_ID,
        "private_link_id": PRIVATE_LINK_ID,
        "interface_endpoint_id": ENDPOINT_ID,
        "name": "orders-prod",
        "connection_status": "REJECTED",
        "previous_status": "PENDING",
        "error_message": None,
        "level": "error",
        "timestamp": firing["timestamp"],
    }
    assert datetime.fromisoformat(firing["timestamp"]).utcoffset() == timedelta(0)
    assert (resolved["state"], resolved["level"]) == ("resolved", "info")
    assert (resolved["connection_status"], resolved["previous_status"]) == ("AVAILABLE", "REJECTED")


def test_an_alert_without_a_name_is_named_after_the_endpoint_id() -> None:
    endpoint = EndpointConfig.model_validate(endpoint_entry())
    with capture_logs() as logs:
        emit_alert(endpoint, AlertEvent(AlertName.NOT_FOUND, True, None, None, None))
    (line,) = logs
    assert line["name"] == ENDPOINT_ID
    assert line["connection_status"] is None
