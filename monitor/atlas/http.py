"""One HTTP exchange with Atlas, for the client and the service-account login alike: bounded
reads, an answer turned into JSON or the matching error, no answer turned into one."""

from __future__ import annotations

import email.utils
import errno
import json
import math
import os
import time
from collections.abc import Callable
from typing import Final

import aiohttp
from multidict import CIMultiDictProxy

from monitor import __version__
from monitor.atlas.errors import (
    ERROR_BY_STATUS,
    LOCAL_RESOURCE_ERRNOS,
    AtlasBadResponseError,
    AtlasRequestError,
    AtlasServerError,
    AtlasUnreachableError,
    LocalResourceError,
)

USER_AGENT: Final = f"atlas-endpoint-monitor/{__version__}"
# An interface endpoint document is ~200 bytes; anything near this cap is not one.
MAX_BODY_BYTES: Final = 1024 * 1024
MAX_THROTTLE_SECONDS: Final = 300.0
"""The longest pause one 429 or 503 imposes on a project, whatever its Retry-After says
(``inf``, a date in year 9999): a wrong header must not silence a project until a restart."""
JSON_PARSE_ERRORS: Final = (ValueError, RecursionError)
"""What json.loads raises for an answer it cannot hold: malformed text or bytes (ValueError,
UnicodeDecodeError), an integer of more digits than Python converts (ValueError), nesting
deeper than the interpreter's stack (RecursionError)."""

RequestObserver = Callable[[str, str, float], None]
"""Called once per HTTP exchange on the wire (401 challenges included) with
(method, status code or ``"error"``, seconds until the response headers arrived)."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_THROTTLE_SECONDS)


async def read_capped(response: aiohttp.ClientResponse, method: str, path: str) -> bytes:
    """Stop reading at the cap, so a runaway answer cannot exhaust memory."""
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise AtlasBadResponseError(
                f"answer body larger than {MAX_BODY_BYTES} bytes", method=method, path=path
            )
        chunks.append(chunk)
    return b"".join(chunks)


def interpret(
    method: str, path: str, status: int, headers: CIMultiDictProxy[str], body: bytes
) -> object:
    """Turn one HTTP answer into a JSON document or the matching typed error."""
    if 200 <= status < 300:
        if status == 204 or (method == "DELETE" and not body.strip()):
            return None
        return _decode_json(method, path, headers, body)
    if status < 400:
        raise AtlasBadResponseError(
            f"unexpected HTTP {status} (location: {headers.get('Location')})",
            method=method,
            path=path,
        )
    error_code, detail = _atlas_error_fields(body)
    # v2 errors repeat the code in a header, which outlives a body a proxy replaced.
    error_code = error_code or headers.get("X-Error-Code") or None
    error_type = ERROR_BY_STATUS.get(
        status, AtlasServerError if status >= 500 else AtlasRequestError
    )
    raise error_type(
        method=method,
        path=path,
        status=status,
        error_code=error_code,
        detail=detail,
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )


def _decode_json(method: str, path: str, headers: CIMultiDictProxy[str], body: bytes) -> object:
    content_type = headers.get("Content-Type", "")
    if "json" not in content_type.lower():
        raise AtlasBadResponseError(
            f"expected JSON, got content type {content_type or '(none)'!r}",
            method=method,
            path=path,
        )
    try:
        return json.loads(body)
    except JSON_PARSE_ERRORS as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:200]
        raise AtlasBadResponseError(f"malformed JSON: {reason}", method=method, path=path) from None


def _atlas_error_fields(body: bytes) -> tuple[str | None, str | None]:
    """Atlas promises only ``error``; proxies in front of it may send HTML, so be lenient."""
    try:
        document = json.loads(body)
    except JSON_PARSE_ERRORS:
        text = body[:200].decode("utf-8", "replace").strip()
        return None, text or None
    if not isinstance(document, dict):
        return None, None
    error_code = document.get("errorCode")
    detail = document.get("detail") or document.get("reason")
    return (
        error_code if isinstance(error_code, str) else None,
        detail if isinstance(detail, str) else None,
    )


def count_header(headers: CIMultiDictProxy[str], name: str) -> float | None:
    value = headers.get(name)
    try:
        count = float(value) if value is not None else None
    except ValueError:
        return None
    return count if count is not None and math.isfinite(count) and count >= 0 else None


def no_answer_error(
    error: BaseException,
    *,
    method: str,
    path: str,
    timeout_seconds: float | None,
    context: Callable[[str], str] = str,
) -> AtlasUnreachableError:
    """The error for an exchange that got no answer (``error`` is what aiohttp or the socket
    raised), for the client and the login alike; ``context`` words the message.

    A ``LocalResourceError`` when this host ran out of something the request needed (aiohttp
    wraps the OSError of a socket it could not create in ClientConnectorError.os_error);
    ``request_sent`` False only when the connection was never made.
    """
    for candidate in (error, getattr(error, "os_error", None), error.__cause__):
        if isinstance(candidate, OSError) and candidate.errno in LOCAL_RESOURCE_ERRNOS:
            return LocalResourceError(
                context(f"not sent, this host is out of resources: {os.strerror(candidate.errno)}"),
                method=method,
                path=path,
                cause=errno.errorcode[candidate.errno],
            )
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        cause = getattr(error, "os_error", None)
        reason = (cause.strerror if cause else None) or str(cause or "timed out")
        message, request_sent = f"cannot connect: {reason}", False
    elif isinstance(error, TimeoutError):
        within = f" within {timeout_seconds:g} s" if timeout_seconds is not None else ""
        message, request_sent = f"no answer{within}", True
    else:
        message, request_sent = f"connection failed: {type(error).__name__}: {error}", True
    return AtlasUnreachableError(
        context(message), method=method, path=path, request_sent=request_sent
    )
