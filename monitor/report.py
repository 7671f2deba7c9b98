"""Human and machine renderings of one polling pass, for ``once``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from monitor.atlas import describe_failure
from monitor.config import AlertSettings
from monitor.logs import masked
from monitor.polling.alerts import AlertName
from monitor.polling.poller import PollResult
from monitor.polling.state import EndpointState, advance

# One poll has no history: any failure counts as unreachable, and time in status (stuck)
# cannot be judged. Otherwise the daemon's own rules apply, so the two never disagree.
_SINGLE_POLL_RULES = AlertSettings(unreachable_after_failures=1, stuck_after_seconds=0)


def result_record(result: PollResult) -> dict[str, Any]:
    """Masked like a log line: Atlas (or a proxy) may echo a secret in an error."""
    endpoint, answer = result.endpoint, result.answer
    record = {
        "name": endpoint.display_name,
        "group_id": endpoint.group_id,
        "private_link_id": endpoint.private_link_id,
        "interface_endpoint_id": endpoint.interface_endpoint_id,
        "cloud_provider": endpoint.cloud_provider.value,
        "connection_status": answer.connection_status.value if answer else None,
        "raw_status": answer.raw_status if answer else None,
        "error_message": answer.error_message if answer else None,
        "delete_requested": answer.delete_requested if answer else None,
        "up": result.up,
        "alerts": sorted(alert_conditions(result)),
        "poll_error": None if result.error is None else describe_failure(result.error),
    }
    return dict(masked(record))


def has_alert(results: Sequence[PollResult]) -> bool:
    return any(alert_conditions(result) for result in results)


def alert_conditions(result: PollResult) -> frozenset[AlertName]:
    """The alerts the daemon would fire on its first look at this result."""
    first_look = advance(EndpointState(), result.observation(), 0.0, _SINGLE_POLL_RULES)
    return frozenset(first_look.state.firing)


def render_json(results: Sequence[PollResult]) -> str:
    return json.dumps([result_record(result) for result in results], indent=2)


_COLUMNS = (
    ("NAME", "name"),
    ("STATUS", "connection_status"),
    ("UP", "up"),
    ("DELETE_REQ", "delete_requested"),
    ("ALERTS", "alerts"),
    ("INTERFACE_ENDPOINT_ID", "interface_endpoint_id"),
    ("GROUP_ID", "group_id"),
    ("PRIVATE_LINK_ID", "private_link_id"),
)


def render_table(results: Sequence[PollResult]) -> str:
    """Aligned columns, with the free-text detail last so long messages never skew them."""
    rows = []
    for result in results:
        record = result_record(result)
        cells = [_printable(_cell(record[key])) for _, key in _COLUMNS]
        detail = record["error_message"] or record["poll_error"] or ""
        if record["connection_status"] == "UNKNOWN":
            detail = f"raw status {record['raw_status']!r}; {detail}".rstrip("; ")
        rows.append([*cells, _printable(detail)])
    headers = [title for title, _ in _COLUMNS] + ["DETAIL"]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(_COLUMNS))]
    lines = []
    for row in [headers, *rows]:
        aligned = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append(f"{aligned}  {row[-1]}".rstrip())
    return "\n".join(lines)


def _printable(text: str) -> str:
    """Text from Atlas with every character a terminal would act on (newline, CR, NUL, ANSI
    escapes) or cannot encode (a lone surrogate) written as a Python escape instead."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(value) or "-"
    return str(value)
