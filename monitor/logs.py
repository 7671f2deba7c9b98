"""Structured logging: one JSON object per line, flushed as written, secrets masked.

stdout is often a file or a pipe in production, where Python would otherwise buffer;
a log line that sits in a buffer while an endpoint is down is an alert nobody sees.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from monitor.log_output import LineHandler, LineLogger, LogOutput

REDACTED = "**********"


class _SecretMasker:
    """Last line of defence: replace any known secret that slipped into a log value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [secret for secret in secrets if secret]

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def __call__(self, logger: object, method_name: str, event_dict: EventDict) -> EventDict:
        if self._secrets:
            for key, value in event_dict.items():
                if not key.startswith("_"):  # structlog's own bookkeeping (_record...)
                    event_dict[key] = self._mask(value)
        return event_dict

    def _mask(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self._mask_text(value)
        if isinstance(value, Mapping):
            return {self._mask(key): self._mask(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._mask(item) for item in value]
        # Anything else is rendered with repr() (an exception, bytes, a path): mask that text,
        # and leave the object alone when it holds no secret.
        text = repr(value)
        masked = self._mask_text(text)
        return value if masked == text else masked

    def _mask_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class _OurHandler(LineHandler):
    """Marks the handler this module installs, so reconfiguring replaces only it."""


# Libraries that speak through the standard logging module, and the least level of theirs
# worth a line: APScheduler reports every job run at info, which the poller logs better.
_LIBRARY_LEVELS = {"apscheduler": logging.ERROR}
_masker = _SecretMasker(())
"""The masker of the logging configured last, for secrets that arrive later (a reload)."""


def mask_secret(secret: str) -> None:
    """Mask ``secret`` too from now on: new credentials read by a config reload."""
    _masker.add(secret)


def configure_logging(
    level: str = "info",
    log_format: str = "json",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Route structlog, and the standard logging of libraries, to ``stream`` (stdout by
    default) at ``level`` and above, in one format."""
    global _masker
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    _masker = _SecretMasker(secrets)
    output = LogOutput(stream or sys.stdout)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _masker,
    ]
    renderer: Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=lambda *_: LineLogger(output),
        cache_logger_on_first_use=False,
    )
    handler = _OurHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for library, least in _LIBRARY_LEVELS.items():
        logging.getLogger(library).setLevel(max(least, numeric_level))
