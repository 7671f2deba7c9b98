"""Log lines: JSON, flushed, secrets masked, library logs included."""

from __future__ import annotations

import io
import json
import logging

import structlog

from monitor.logs import REDACTED, configure_logging, mask_secret
from tests.helpers import PRIVATE_KEY


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


def test_library_logging_comes_out_as_the_same_json_lines_masked_and_filtered() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream, secrets=[PRIVATE_KEY])
    logging.getLogger("aiohttp.server").error("Error handling request from %s", PRIVATE_KEY)
    logging.getLogger("aiohttp.server").info("below the configured level")
    logging.getLogger("apscheduler.scheduler").warning("APScheduler's own chatter")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == f"Error handling request from {REDACTED}"
    assert record["logger"] == "aiohttp.server"
    assert record["level"] == "error"
    assert record["timestamp"].endswith("Z")


def test_reconfiguring_replaces_the_handler_instead_of_doubling_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)
    logging.getLogger("aiohttp.server").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_a_secret_read_later_by_a_reload_is_masked_too() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, secrets=[PRIVATE_KEY])
    mask_secret("mdb_sa_sk_NeW-SeCrEt")
    structlog.get_logger("t").warning("oops", detail="mdb_sa_sk_NeW-SeCrEt", old=PRIVATE_KEY)

    record = json.loads(stream.getvalue())
    assert record["detail"] == REDACTED
    assert record["old"] == REDACTED
