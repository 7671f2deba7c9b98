from __future__ import annotations

import json

import pytest

from monitor.atlas import (
    AtlasAuthError,
    AtlasNotFoundError,
    AtlasUnreachableError,
    InterfaceEndpoint,
)
from monitor.config import EndpointConfig
from monitor.polling.alerts import AlertName
from monitor.polling.poller import PollResult
from monitor.providers import ConnectionStatus
from monitor.report import alert_conditions, has_alert, render_json, render_table
from tests.helpers import GROUP_ID, PRIVATE_LINK_ID

HEALTHY = EndpointConfig(
    group_id=GROUP_ID,
    private_link_id=PRIVATE_LINK_ID,
    interface_endpoint_id="vpce-00000001",
    name="a-rather-long-display-name",
)
MISSING = EndpointConfig(
    group_id=GROUP_ID, private_link_id=PRIVATE_LINK_ID, interface_endpoint_id="vpce-00000002"
)
NOT_FOUND = AtlasNotFoundError(
    method="GET", path="/x", status=404, error_code="RESOURCE_NOT_FOUND", detail="gone"
)


def results() -> list[PollResult]:
    answer = InterfaceEndpoint(
        "vpce-00000001", ConnectionStatus.AVAILABLE, "AVAILABLE", None, False
    )
    return [PollResult(HEALTHY, answer, None), PollResult(MISSING, None, NOT_FOUND)]


def test_table_columns_line_up_whatever_the_content() -> None:
    header, healthy, missing = render_table(results()).splitlines()
    for column in ("STATUS", "UP", "ALERTS", "INTERFACE_ENDPOINT_ID", "PRIVATE_LINK_ID"):
        start = header.index(column)
        for row in (healthy, missing):
            assert row[start - 1] == " ", (column, row)
            assert row[start] != " ", (column, row)
    assert missing[header.index("DETAIL") :] == "404 RESOURCE_NOT_FOUND: gone"
    assert len(healthy) < header.index("DETAIL"), "no trailing blanks for an empty detail"
    assert healthy.startswith("a-rather-long-display-name  AVAILABLE")
    assert missing.startswith("vpce-00000002")


def test_json_and_alert_flag() -> None:
    records = json.loads(render_json(results()))
    assert [record["alerts"] for record in records] == [[], ["not_found"]]
    assert records[1]["connection_status"] is None
    assert has_alert(results())
    assert not has_alert(results()[:1])


def answer(status: str, error_message: str | None = None) -> InterfaceEndpoint:
    return InterfaceEndpoint(
        HEALTHY.interface_endpoint_id, ConnectionStatus.parse(status), status, error_message, False
    )


@pytest.mark.parametrize(
    ("status", "error_message", "expected"),
    [
        ("AVAILABLE", None, set()),
        ("PENDING", None, set()),
        ("NONE", None, set()),
        ("DELETING", None, set()),
        ("SOMETHING_NEW", None, set()),
        ("REJECTED", None, {AlertName.REJECTED}),
        ("AVAILABLE", "subnet gone", {AlertName.ERROR_MESSAGE}),
        ("REJECTED", "quota", {AlertName.REJECTED, AlertName.ERROR_MESSAGE}),
    ],
)
def test_conditions_from_an_answer(
    status: str, error_message: str | None, expected: set[AlertName]
) -> None:
    assert alert_conditions(PollResult(HEALTHY, answer(status, error_message), None)) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            AtlasNotFoundError(method="GET", path="/x", status=404, error_code=None, detail=None),
            {AlertName.NOT_FOUND},
        ),
        (
            AtlasAuthError(method="GET", path="/x", status=401, error_code=None, detail=None),
            {AlertName.UNREACHABLE},
        ),
        (
            AtlasUnreachableError("timed out", method="GET", path="/x", request_sent=True),
            {AlertName.UNREACHABLE},
        ),
    ],
)
def test_conditions_from_a_failed_poll(error: Exception, expected: set[AlertName]) -> None:
    assert alert_conditions(PollResult(HEALTHY, None, error)) == expected
