"""Client for the Atlas Administration API's interface-endpoint resources.

Everything that can go wrong between us and Atlas ends up as one of the ``Atlas*Error``
types below, classified by HTTP status as Atlas documents it, with Atlas' own errorCode
and detail kept for logs and alerts. Transient failures (429, 5xx, timeouts, broken
connections) are retried here with capped exponential backoff and full jitter, so callers
only ever see the final outcome.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Final

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from pydantic import SecretStr

from monitor import __version__

API_ROOT: Final = "/api/atlas/v1.0"
USER_AGENT: Final = f"atlas-endpoint-monitor/{__version__}"
# An interface endpoint document is ~200 bytes; anything near this cap is not one.
MAX_BODY_BYTES: Final = 1024 * 1024
# A Retry-After longer than this is not waited for inside one poll: the caller gets the
# RateLimitedError at once and the next poll tries again.
MAX_RETRY_AFTER_SECONDS: Final = 60.0
BACKOFF_BASE_SECONDS: Final = 0.5
BACKOFF_CAP_SECONDS: Final = 30.0

# Id formats, shared by config validation and the simulator's path checks.
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
"""Atlas project (group) and private endpoint service ids."""
INTERFACE_ENDPOINT_ID = re.compile(r"vpce-(?:[0-9a-f]{8}|[0-9a-f]{17})")
"""AWS VPC interface endpoint ids: the short (legacy) and the long form."""

log = structlog.get_logger(__name__)

RequestObserver = Callable[[str, str, float], None]
"""Called once per HTTP exchange on the wire (401 challenges included) with
(method, status code or ``"error"``, seconds until the response headers arrived)."""


class ConnectionStatus(StrEnum):
    NONE = "NONE"
    PENDING_ACCEPTANCE = "PENDING_ACCEPTANCE"
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    REJECTED = "REJECTED"
    DELETING = "DELETING"
    UNKNOWN = "UNKNOWN"
    """Anything Atlas may add later; the raw value is kept beside it."""

    @classmethod
    def parse(cls, raw: str) -> ConnectionStatus:
        try:
            status = cls(raw)
        except ValueError:
            return cls.UNKNOWN
        return cls.UNKNOWN if status is cls.UNKNOWN else status


@dataclass(frozen=True, order=True)
class EndpointRef:
    """The three ids that name one interface endpoint in Atlas."""

    group_id: str
    private_link_id: str
    interface_endpoint_id: str

    def __str__(self) -> str:
        return f"{self.group_id}/{self.private_link_id}/{self.interface_endpoint_id}"

    @property
    def collection_path(self) -> str:
        return f"/groups/{self.group_id}/privateEndpoint/{self.private_link_id}/interfaceEndpoints"

    @property
    def path(self) -> str:
        return f"{self.collection_path}/{self.interface_endpoint_id}"


@dataclass(frozen=True)
class InterfaceEndpoint:
    """One valid answer from Atlas about an interface endpoint."""

    interface_endpoint_id: str
    connection_status: ConnectionStatus
    raw_status: str
    error_message: str | None
    delete_requested: bool

    @classmethod
    def from_json(cls, document: object) -> InterfaceEndpoint:
        """Strict on types, because a wrong shape means we would report something false."""
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        endpoint_id = document.get("interfaceEndpointId")
        raw_status = document.get("connectionStatus")
        error_message = document.get("errorMessage")
        delete_requested = document.get("deleteRequested", False)
        if not isinstance(endpoint_id, str):
            raise ValueError("interfaceEndpointId is missing or not a string")
        if not isinstance(raw_status, str):
            raise ValueError("connectionStatus is missing or not a string")
        if error_message is not None and not isinstance(error_message, str):
            raise ValueError("errorMessage is neither null nor a string")
        if not isinstance(delete_requested, bool):
            raise ValueError("deleteRequested is not a boolean")
        return cls(
            interface_endpoint_id=endpoint_id,
            connection_status=ConnectionStatus.parse(raw_status),
            raw_status=raw_status,
            error_message=error_message or None,
            delete_requested=delete_requested,
        )


class AtlasError(Exception):
    """Any failure to get a valid answer from Atlas for one call."""

    def __init__(self, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {message}")
        self.summary = message
        """What went wrong, without the request; for places that show the endpoint already."""
        self.method = method
        self.path = path


class AtlasApiError(AtlasError):
    """Atlas answered with an error status; ``error_code`` and ``detail`` are Atlas' words."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status: int,
        error_code: str | None,
        detail: str | None,
        retry_after: float | None = None,
    ) -> None:
        summary = " ".join(str(part) for part in (status, error_code) if part)
        super().__init__(f"{summary}: {detail}" if detail else summary, method=method, path=path)
        self.status = status
        self.error_code = error_code
        self.detail = detail
        self.retry_after = retry_after


class AtlasNotFoundError(AtlasApiError):
    """404: the endpoint (or its project or private link) does not exist in Atlas."""


class AtlasAuthError(AtlasApiError):
    """401 or 403: wrong key, missing role, or the caller's IP is not on the access list."""


class AtlasRateLimitedError(AtlasApiError):
    """429: Atlas throttled us; ``retry_after`` says for how long, when it says."""


class AtlasServerError(AtlasApiError):
    """5xx: Atlas (or something in front of it) failed."""


class AtlasRequestError(AtlasApiError):
    """Any other 4xx, such as a malformed id or a conflicting POST."""


class AtlasBadResponseError(AtlasError):
    """Atlas answered, but not with what its API promises (shape, type, size, status)."""


class AtlasUnreachableError(AtlasError):
    """No answer at all: timeout, refused or dropped connection.

    ``request_sent`` is False only when the connection was never established, which is the
    one case where repeating a non-idempotent request is known to be safe.
    """

    def __init__(self, message: str, *, method: str, path: str, request_sent: bool) -> None:
        super().__init__(message, method=method, path=path)
        self.request_sent = request_sent


def describe_failure(error: BaseException) -> str:
    """What went wrong, without the request: for places that already name the endpoint."""
    if isinstance(error, AtlasError):
        return error.summary
    return f"{type(error).__name__}: {error}"


_TRANSIENT_ERRORS = (AtlasRateLimitedError, AtlasServerError, AtlasUnreachableError)
_ERROR_BY_STATUS: Mapping[int, type[AtlasApiError]] = {
    401: AtlasAuthError,
    403: AtlasAuthError,
    404: AtlasNotFoundError,
    429: AtlasRateLimitedError,
}


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
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


class AtlasClient:
    """One HTTP session with preemptive Digest auth, shared by every call of the process.

    Use it as ``async with AtlasClient(...) as client``; the session is created on entry
    (inside the running loop, as aiohttp wants) and closed on exit.
    """

    def __init__(
        self,
        *,
        base_url: str,
        public_key: str,
        private_key: SecretStr,
        timeout_seconds: float,
        max_retries: int,
        max_connections: int = 8,
        max_requests_per_minute: int | None = None,
        observer: RequestObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._api_url = base_url.rstrip("/") + API_ROOT
        self._public_key = public_key
        self._private_key = private_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_retries = max_retries
        self._max_connections = max_connections
        self._observer = observer
        self._sleep = sleep
        self._jitter = jitter
        self._session: aiohttp.ClientSession | None = None
        self._first_exchange_done: asyncio.Event | None = None
        self._project_pauses: dict[str, float] = {}
        """Project (group) id -> monotonic time before which no request for it is sent."""
        self._spacing = 60.0 / max_requests_per_minute if max_requests_per_minute else 0.0
        self._next_slots: dict[str, float] = {}
        """Project (group) id -> monotonic time its next request may start, when paced."""

    def __repr__(self) -> str:
        return f"AtlasClient(api_url={self._api_url!r}, public_key={self._public_key!r})"

    async def __aenter__(self) -> AtlasClient:
        self._first_exchange_done = None
        middlewares: list[aiohttp.ClientMiddlewareType] = [
            aiohttp.DigestAuthMiddleware(
                self._public_key, self._private_key.get_secret_value(), preemptive=True
            )
        ]
        if self._observer is not None:
            # Inside the digest middleware, so challenges and retries are each seen.
            middlewares.append(self._observe_exchange)
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            middlewares=middlewares,
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_interface_endpoint(self, ref: EndpointRef) -> InterfaceEndpoint:
        document = await self._with_retries("GET", ref.path)
        return _endpoint_from(document, ref, "GET")

    async def delete_interface_endpoint(self, ref: EndpointRef) -> bool:
        """Ask Atlas to remove the endpoint; False when it was already gone.

        A 404 after a retried DELETE usually means an earlier attempt went through.
        """
        try:
            await self._with_retries("DELETE", ref.path)
        except AtlasNotFoundError:
            return False
        return True

    async def add_interface_endpoint(self, ref: EndpointRef) -> InterfaceEndpoint:
        """POST the endpoint, never twice blindly.

        A POST whose outcome is unknown (timeout, dropped connection, 5xx) may have created
        the endpoint, or may still be creating it, so it is followed by a GET, never by
        another POST: if the endpoint exists, that is our answer; if not, this call fails
        with the POST's error and the next poll cycle, well after any straggling POST, looks
        again before adding. Only a 429 or a connection that was never made is retried.
        """

        async def find_applied_post(error: AtlasError) -> object | None:
            if not _outcome_unknown(error):
                return None
            try:
                return await self._with_retries("GET", ref.path)
            except AtlasNotFoundError:
                log.info("atlas_post_not_applied", endpoint=str(ref), cause=error.summary)
                raise error from None

        body = {"interfaceEndpointId": ref.interface_endpoint_id}
        document = await self._with_retries(
            "POST", ref.collection_path, body, before_retry=find_applied_post
        )
        return _endpoint_from(document, ref, "POST")

    async def _with_retries(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None = None,
        before_retry: Callable[[AtlasError], Awaitable[object | None]] | None = None,
    ) -> object:
        """Retry transient failures; ``before_retry`` may answer instead of a new attempt."""
        attempt = 0
        waited_out_429 = False
        while True:
            try:
                if self._first_exchange_done is not None:
                    # Queued behind the session's first exchange, whose answer may be the
                    # 429 that pauses this project: look at the pause once it is known.
                    await self._first_exchange_done.wait()
                if not waited_out_429:
                    await self._respect_project_pause(method, path)
                await self._pace(path)
                return await self._exchange(method, path, json_body)
            except _TRANSIENT_ERRORS as error:
                throttled = isinstance(error, AtlasRateLimitedError)
                if throttled:
                    self._pause_project(path, attempt, error)
                if attempt >= self._max_retries or _wait_too_long(error):
                    raise
                if before_retry is not None:
                    answer = await before_retry(error)
                    if answer is not None:
                        return answer
                await self._back_off(method, path, attempt, error)
                # Its own back-off already honoured the 429 that set the project's pause.
                waited_out_429 = throttled
                attempt += 1

    def _pause_project(self, path: str, attempt: int, error: AtlasError) -> None:
        """Atlas throttles per project, so one 429 holds back every request for that project,
        not just the one that got it: the rest of a concurrent cycle would only earn more."""
        group_id = _project_of(path)
        pause = getattr(error, "retry_after", None)
        if pause is None:
            pause = _backoff_ceiling(attempt)
        until = time.monotonic() + pause
        if until > self._project_pauses.get(group_id, 0.0):
            self._project_pauses[group_id] = until
            log.warning("atlas_project_throttled", group_id=group_id, pause_seconds=pause)

    async def _pace(self, path: str) -> None:
        """Space the project's requests evenly, so a cycle of many endpoints in one project
        reaches Atlas as a steady trickle under its limit instead of a burst that earns 429s."""
        if not self._spacing:
            return
        group_id = _project_of(path)
        now = time.monotonic()
        slot = max(now, self._next_slots.get(group_id, now))
        self._next_slots[group_id] = slot + self._spacing
        if slot > now:
            await self._sleep(slot - now)

    async def _respect_project_pause(self, method: str, path: str) -> None:
        """Wait out the project's pause, or fail at once if it is longer than a poll waits."""
        group_id = _project_of(path)
        until = self._project_pauses.get(group_id)
        if until is None:
            return
        remaining = until - time.monotonic()
        if remaining <= 0:
            del self._project_pauses[group_id]
            return
        if remaining > MAX_RETRY_AFTER_SECONDS:
            raise AtlasRateLimitedError(
                method=method,
                path=path,
                status=429,
                error_code=None,
                detail=f"not sent: Atlas throttles project {group_id} for {remaining:.0f} s more",
                retry_after=remaining,
            )
        await self._sleep(remaining)

    async def _back_off(self, method: str, path: str, attempt: int, error: AtlasError) -> None:
        """Full jitter (AWS architecture blog), but never sooner than Atlas' Retry-After."""
        delay = self._jitter() * _backoff_ceiling(attempt)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        log.warning(
            "atlas_request_retry",
            method=method,
            path=path,
            attempt=attempt + 1,
            max_retries=self._max_retries,
            delay_seconds=round(delay, 3),
            cause=error.summary,
        )
        await self._sleep(delay)

    async def _exchange(
        self, method: str, path: str, json_body: Mapping[str, Any] | None = None
    ) -> object:
        """One request (plus its digest challenge) and its classified answer.

        The session's very first exchange runs alone: it fetches the Digest challenge that
        every later request then answers preemptively. Were the first requests of a
        concurrent cycle sent together, each would pay its own 401 round trip.
        """
        if self._session is None:
            raise RuntimeError("AtlasClient used outside 'async with'")
        if self._first_exchange_done is None:
            self._first_exchange_done = asyncio.Event()
            try:
                return await self._send(self._session, method, path, json_body)
            finally:
                self._first_exchange_done.set()
        await self._first_exchange_done.wait()
        return await self._send(self._session, method, path, json_body)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None,
    ) -> object:
        url = self._api_url + path
        try:
            async with session.request(
                method, url, json=json_body, allow_redirects=False
            ) as response:
                body = await _read_capped(response, method, path)
                return _interpret(method, path, response.status, response.headers, body)
        except AtlasError:
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            cause = getattr(error, "os_error", None)
            reason = (cause.strerror if cause else None) or str(cause or "timed out")
            message, request_sent = f"cannot connect: {reason}", False
        except TimeoutError:
            message, request_sent = f"no answer within {self._timeout.total:g} s", True
        except (aiohttp.ClientError, OSError) as error:
            if type(error) is aiohttp.ClientError:
                # The bare class is what the Digest middleware raises for a challenge it
                # cannot answer: Atlas (or what poses as it) spoke, but not Digest as agreed.
                raise AtlasBadResponseError(
                    f"unusable Digest challenge: {error}", method=method, path=path
                ) from None
            message, request_sent = f"connection failed: {type(error).__name__}: {error}", True
        raise AtlasUnreachableError(message, method=method, path=path, request_sent=request_sent)

    async def _observe_exchange(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        assert self._observer is not None
        started = time.perf_counter()
        try:
            response = await handler(request)
        except BaseException:
            self._observer(request.method, "error", time.perf_counter() - started)
            raise
        self._observer(request.method, str(response.status), time.perf_counter() - started)
        return response


async def _read_capped(response: aiohttp.ClientResponse, method: str, path: str) -> bytes:
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


def _interpret(
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
    error_type = _ERROR_BY_STATUS.get(
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
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AtlasBadResponseError(f"malformed JSON: {error}", method=method, path=path) from None


def _atlas_error_fields(body: bytes) -> tuple[str | None, str | None]:
    """Atlas promises only ``error``; proxies in front of it may send HTML, so be lenient."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
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


def _endpoint_from(document: object, ref: EndpointRef, method: str) -> InterfaceEndpoint:
    path = ref.path if method == "GET" else ref.collection_path
    try:
        endpoint = InterfaceEndpoint.from_json(document)
    except ValueError as error:
        raise AtlasBadResponseError(
            f"unexpected answer shape: {error}", method=method, path=path
        ) from None
    if endpoint.interface_endpoint_id != ref.interface_endpoint_id:
        raise AtlasBadResponseError(
            f"answer is about {endpoint.interface_endpoint_id!r}, not the endpoint asked for",
            method=method,
            path=path,
        )
    return endpoint


def _backoff_ceiling(attempt: int) -> float:
    """The longest back-off before retry ``attempt + 1``: exponential from 0.5 s, capped."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**attempt)


def _project_of(path: str) -> str:
    """The group id of an API path: every path this client uses is /groups/{groupId}/..."""
    return path.split("/", 3)[2]


def _outcome_unknown(error: AtlasError) -> bool:
    if isinstance(error, AtlasUnreachableError):
        return error.request_sent
    return isinstance(error, AtlasServerError)


def _wait_too_long(error: AtlasError) -> bool:
    retry_after = getattr(error, "retry_after", None)
    return retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS
