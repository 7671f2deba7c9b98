"""Structured logging: one JSON object per line, flushed as written, secrets masked.

stdout is often a file or a pipe in production, where Python would otherwise buffer;
a log line that sits in a buffer while an endpoint is down is an alert nobody sees.
"""

from __future__ import annotations

import base64
import collections
import logging
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor

from monitor.log_output import LineHandler, LineLogger, LogOutput

REDACTED = "**********"
KEPT_TOKENS = 4
"""Bearer tokens masked at once: the current one and a few before it (long expired by then),
so a daemon renewing its token every hour for a year does not mask thousands."""


def secret_forms(user: str, secret: str) -> list[str]:
    """Every form in which ``secret`` may come back in an echoed request: as it is, URL- or
    form-encoded, and inside ``Authorization: Basic`` (base64 of user:secret, also of the
    form-encoded pair, as RFC 6749 section 2.3.1 has OAuth clients send it)."""
    basic_pairs = (f"{user}:{secret}", f"{quote_plus(user)}:{quote_plus(secret)}")
    forms = [secret, quote(secret, safe=""), quote_plus(secret)]
    forms += [base64.b64encode(pair.encode()).decode("ascii") for pair in basic_pairs]
    return list(dict.fromkeys(forms))


class _SecretMasker:
    """Last line of defence: replace any known secret that slipped into a log value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._fixed = [secret for secret in secrets if secret]
        self._tokens: collections.deque[str] = collections.deque(maxlen=KEPT_TOKENS)
        self._secrets = list(self._fixed)

    def add(self, secret: str) -> None:
        if secret and secret not in self._fixed:
            self._fixed.append(secret)
            self._secrets = [*self._fixed, *self._tokens]

    def add_token(self, token: str) -> None:
        if token and token not in self._tokens:
            self._tokens.append(token)
            self._secrets = [*self._fixed, *self._tokens]

    def __call__(self, logger: object, method_name: str, event_dict: EventDict) -> EventDict:
        if self._secrets:
            for key, value in event_dict.items():
                if not key.startswith("_"):  # structlog's own bookkeeping (_record...)
                    event_dict[key] = self._mask(value)
        return event_dict

    def mask(self, value: Any) -> Any:
        return self._mask(value) if self._secrets else value

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


def mask_token(token: str) -> None:
    """Mask a newly issued Bearer token from now on (with the few issued before it)."""
    _masker.add_token(token)


def masked(value: Any) -> Any:
    """``value`` (text, or a structure of it) with every known secret replaced: for output
    that is not a log line, such as the result ``once`` prints."""
    return _masker.mask(value)


def _finite_numbers(logger: object, method_name: str, event_dict: EventDict) -> EventDict:
    """Infinity and NaN are not JSON: strict parsers reject a whole line holding one, so
    they are written as text ("inf", "nan"), wherever in the line they are."""
    for key, value in event_dict.items():
        if not key.startswith("_"):  # structlog's own bookkeeping (_record...)
            event_dict[key] = _finite(value)
    return event_dict


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


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
        _finite_numbers,
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
