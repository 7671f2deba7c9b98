from __future__ import annotations

import pytest

from monitor.alerts import AlertName, observed_conditions
from monitor.atlas import (
    AtlasAuthError,
    AtlasNotFoundError,
    AtlasUnreachableError,
    ConnectionStatus,
    InterfaceEndpoint,
)
from tests.conftest import ENDPOINT_ID


def answer(status: str, error_message: str | None = None) -> InterfaceEndpoint:
    return InterfaceEndpoint(
        ENDPOINT_ID, ConnectionStatus.parse(status), status, error_message, False
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
    assert observed_conditions(answer(status, error_message), None) == expected


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
    assert observed_conditions(None, error) == expected
