"""Atlas service-account login: OAuth 2 client credentials, then ``Authorization: Bearer``.

``ServiceAccountLogin`` is an aiohttp client middleware, used by ``AtlasClient`` in place of
``aiohttp.DigestAuthMiddleware`` when the credentials are a client id and secret. It logs in
at ``POST {host}/api/oauth/token`` (HTTP Basic with the client id and secret each
form-encoded first, as RFC 6749 section 2.3.1 says, form ``grant_type=client_credentials``),
caches the token and renews it shortly before it expires, with one login at a time however
many requests wait for it. A 401 for a token obtained before the request started means Atlas
no longer takes it: the token is dropped and the request sent once more with a new one, as
the Digest middleware answers a challenge once.

A failed login raises the client's own error types for the token request ("POST",
"/api/oauth/token"), so ``AtlasClient`` retries and reports it like any other exchange:
400/401/403 ``AtlasAuthError``, 429 ``AtlasRateLimitedError``, 5xx ``AtlasServerError``,
other 4xx ``AtlasRequestError``, an unusable answer ``AtlasBadResponseError``, no answer
``AtlasUnreachableError``. Neither the secret nor a token is ever put in a message, a log
line or a repr.

It builds on ``errors`` and ``http`` only, and ``client`` imports it: no import cycle.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote_plus

import aiohttp
import structlog
from aiohttp import hdrs
from multidict import CIMultiDictProxy
from pydantic import SecretStr
from yarl import URL

from monitor.atlas.errors import (
    AtlasApiError,
    AtlasAuthError,
    AtlasBadResponseError,
    AtlasError,
    AtlasRateLimitedError,
    AtlasRequestError,
    AtlasServerError,
)
from monitor.atlas.http import JSON_PARSE_ERRORS, no_answer_error, parse_retry_after, read_capped
from monitor.logs import mask_token

TOKEN_PATH: Final = "/api/oauth/token"  # noqa: S105 (a URL path, not a password)
LOGIN_METHOD: Final = "POST"
RENEW_MARGIN_SECONDS: Final = 60.0
RENEW_MARGIN_SHARE: Final = 0.1
"""A token is renewed once less than max(60 s, 10 % of its lifetime) of it is left (but
never earlier than half-way through its lifetime, so a short-lived token is still used)."""
MAX_DETAIL_CHARS: Final = 200
REDACTED: Final = "**********"

# RFC 6750 b64token would be stricter; visible ASCII without spaces is what can go into a
# header without changing its meaning.
_TOKEN_SHAPE = re.compile(r"[\x21-\x7e]+")

log = structlog.get_logger(__name__)


def token_url(base_url: str) -> str:
    """The token endpoint of the Atlas at ``base_url`` (it is not under /api/atlas)."""
    return base_url.rstrip("/") + TOKEN_PATH


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    serial: int
    """Counts logins: a token with a higher serial than a request saw at its start was
    obtained while that request was waiting."""
    expires_in: float
    renew_at: float
    """Clock time from which the token is due for renewal."""


class ServiceAccountLogin:
    """aiohttp client middleware: Bearer tokens from the Atlas service-account login.

    ``clock`` is monotonic seconds, injectable for tests. The token is only ever sent to the
    origin (scheme, host, port) of ``token_url``; requests to any other origin pass through
    untouched.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        timeout: aiohttp.ClientTimeout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not client_id:
            raise ValueError("the service account client id is empty")
        if not client_secret.get_secret_value():
            raise ValueError("the service account client secret is empty")
        self._token_url = URL(token_url)
        self._origin = self._token_url.origin()  # ValueError for a relative URL
        self.client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._clock = clock
        self._token: _Token | None = None
        self._logins = 0
        self._login_task: asyncio.Task[_Token] | None = None

    def __repr__(self) -> str:
        url = str(self._token_url)
        return f"ServiceAccountLogin(token_url={url!r}, client_id={self.client_id!r})"

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if request.url.origin() != self._origin:
            return await handler(request)
        logins_before = self._logins
        token = await self._valid_token(request.session)
        request.headers[hdrs.AUTHORIZATION] = f"Bearer {token.value}"
        response = await handler(request)
        if response.status != 401 or token.serial > logins_before:
            # A token obtained for this very request that Atlas refuses would be refused
            # again: the 401 is the answer.
            return response
        response.release()
        token = await self._valid_token(request.session, rejected=token)
        request.headers[hdrs.AUTHORIZATION] = f"Bearer {token.value}"
        return await handler(request)

    async def _valid_token(
        self, session: aiohttp.ClientSession, rejected: _Token | None = None
    ) -> _Token:
        """The cached token, or a new one from the single login in flight."""
        if rejected is not None and self._token is rejected:
            self._token = None
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token
        task = self._login_task
        if task is None or task.done():
            reason = "initial" if self._logins == 0 else "renewal"
            if rejected is not None:
                reason = "token rejected"
            task = asyncio.get_running_loop().create_task(self._login(session, reason))
            task.add_done_callback(self._login_done)
            self._login_task = task
        # Shielded: a waiter that gives up (its own request timed out) does not cancel the
        # login the other waiters share.
        return await asyncio.shield(task)

    def _login_done(self, task: asyncio.Task[_Token]) -> None:
        if self._login_task is task:
            self._login_task = None
        if not task.cancelled():
            task.exception()  # retrieved here, in case every waiter gave up

    async def _login(self, session: aiohttp.ClientSession, reason: str) -> _Token:
        started = self._clock()
        status, headers, body = await self._post_token_request(session)
        expires_in, value = self._token_from(status, headers, body)
        self._logins += 1
        mask_token(value)  # an error echoing the request must not show it in the log
        margin = min(max(RENEW_MARGIN_SECONDS, RENEW_MARGIN_SHARE * expires_in), expires_in / 2)
        token = _Token(
            value=value,
            serial=self._logins,
            expires_in=expires_in,
            renew_at=started + expires_in - margin,
        )
        self._token = token
        log.info(
            "atlas_service_account_login",
            client_id=self.client_id,
            expires_in_seconds=expires_in,
            reason=reason,
        )
        return token

    async def _post_token_request(
        self, session: aiohttp.ClientSession
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        try:
            async with session.post(
                self._token_url,
                data={"grant_type": "client_credentials"},
                headers={hdrs.AUTHORIZATION: self._basic_auth(), hdrs.ACCEPT: "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
                middlewares=(),  # not the session's: they would log in to log in
            ) as response:
                body = await read_capped(response, LOGIN_METHOD, TOKEN_PATH)
                return response.status, response.headers, body
        except AtlasError:
            raise
        except (aiohttp.ClientError, OSError) as error:
            raise no_answer_error(
                error,
                method=LOGIN_METHOD,
                path=TOKEN_PATH,
                timeout_seconds=self._timeout.total,
                context=lambda message: f"service account login: {self._scrub(message)}",
            ) from None

    def _basic_auth(self) -> str:
        """RFC 6749 section 2.3.1: id and secret are each form-encoded (so a ':' in either
        is no separator, and ``+ / %`` arrive as written), then joined for HTTP Basic. The
        Go SDK's oauth2 library does the same; ids and secrets of plain letters, digits and
        ``_ - . ~`` are unchanged by it. By hand: aiohttp 3.14 deprecates BasicAuth."""
        secret = self._client_secret.get_secret_value()
        credentials = f"{quote_plus(self.client_id)}:{quote_plus(secret)}"
        return "Basic " + base64.b64encode(credentials.encode()).decode("ascii")

    def _token_from(
        self, status: int, headers: CIMultiDictProxy[str], body: bytes
    ) -> tuple[float, str]:
        """(expires_in, access_token) of a successful answer, or the matching error."""
        if status >= 400:
            raise self._refusal(status, headers, body)
        if not 200 <= status < 300:
            location = headers.get(hdrs.LOCATION)
            raise _bad_answer(f"unexpected HTTP {status} (location: {location})")
        try:
            document = json.loads(body)
        except JSON_PARSE_ERRORS:
            content_type = headers.get(hdrs.CONTENT_TYPE) or "(none)"
            raise _bad_answer(f"answer is not JSON (content type {content_type!r})") from None
        if not isinstance(document, dict):
            raise _bad_answer(f"expected a JSON object, got {type(document).__name__}")
        value = document.get("access_token")
        if not isinstance(value, str) or not value:
            raise _bad_answer("access_token is missing or not a non-empty string")
        if not _TOKEN_SHAPE.fullmatch(value):
            raise _bad_answer("access_token holds characters a header cannot carry")
        token_type = document.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise _bad_answer("token_type is not Bearer")
        expires_in = document.get("expires_in")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
            or expires_in <= 0
        ):
            raise _bad_answer("expires_in is missing or not a positive number")
        return float(expires_in), value

    def _refusal(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> AtlasApiError:
        error_code, description = _oauth_error_fields(body)
        error_code = self._scrub(error_code) if error_code else None
        error_type: type[AtlasApiError]
        if status in (400, 401, 403):
            error_type, what = AtlasAuthError, "service account login refused"
        elif status == 429:
            error_type, what = AtlasRateLimitedError, "service account login throttled"
        elif status >= 500:
            error_type, what = AtlasServerError, "service account login failed"
        else:
            error_type, what = AtlasRequestError, "service account login failed"
        detail = f"{what}: {self._scrub(description)}" if description else what
        return error_type(
            method=LOGIN_METHOD,
            path=TOKEN_PATH,
            status=status,
            error_code=error_code,
            detail=detail,
            retry_after=parse_retry_after(headers.get(hdrs.RETRY_AFTER)),
        )

    def _scrub(self, text: str) -> str:
        """Text that came from the wire, capped, and without the secret should it echo it,
        as sent (form-encoded) or decoded."""
        secret = self._client_secret.get_secret_value()
        for spelling in (secret, quote_plus(secret)):
            text = text.replace(spelling, REDACTED)
        return text[:MAX_DETAIL_CHARS]


def _bad_answer(problem: str) -> AtlasBadResponseError:
    return AtlasBadResponseError(
        f"service account login: {problem}", method=LOGIN_METHOD, path=TOKEN_PATH
    )


def _oauth_error_fields(body: bytes) -> tuple[str | None, str | None]:
    """(error, description) of a refused login: RFC 6749 fields, else Atlas' own error body,
    else the start of whatever text a proxy sent."""
    try:
        document = json.loads(body)
    except JSON_PARSE_ERRORS:
        text = body[:MAX_DETAIL_CHARS].decode("utf-8", "replace").strip()
        return None, text or None
    if not isinstance(document, Mapping):
        return None, None
    code = _first_text(document, "error", "errorCode")
    description = _first_text(document, "error_description", "detail", "reason")
    return code, description


def _first_text(document: Mapping[str, object], *names: str) -> str | None:
    for name in names:
        value = document.get(name)
        if isinstance(value, str) and value:
            return value
    return None
