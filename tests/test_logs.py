from __future__ import annotations

import io
import json

import structlog

from monitor.logs import REDACTED, configure_logging
from tests.conftest import PRIVATE_KEY


def test_json_lines_with_iso_utc_timestamp_and_level() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger("t").info("poll_cycle_done", endpoints=3)
    structlog.get_logger("t").debug("too_chatty")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "poll_cycle_done"
    assert record["endpoints"] == 3
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_known_secrets_are_masked_wherever_they_appear() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream, secrets=[PRIVATE_KEY])
    structlog.get_logger("t").warning(
        "oops", detail=f"key={PRIVATE_KEY}", nested={"deep": [PRIVATE_KEY]}
    )
    output = stream.getvalue()
    assert PRIVATE_KEY not in output
    record = json.loads(output)
    assert record["detail"] == f"key={REDACTED}"
    assert record["nested"] == {"deep": [REDACTED]}


def test_console_format_is_readable_text() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    structlog.get_logger("t").info("simulator_started", url="http://127.0.0.1:1")
    assert "simulator_started" in stream.getvalue()
    assert not stream.getvalue().startswith("{")
