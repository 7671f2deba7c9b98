"""Client for the Atlas Administration API's private-endpoint resources, v1.0 and v2.

Everything that can go wrong between us and Atlas ends up as one of the ``Atlas*Error``
types below, classified by HTTP status as Atlas documents it, with Atlas' own errorCode
and detail kept for logs and alerts. Transient failures (429, 5xx, timeouts, broken
connections) are retried here with capped exponential backoff and full jitter, so callers
only ever see the final outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import json
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import structlog
import yarl
from multidict import CIMultiDictProxy
from pydantic import SecretStr

from monitor import __version__
from monitor.providers import (
    OBJECT_ID,
    PROVIDERS,
    CloudProvider,
    ConnectionStatus,
    ServiceStatus,
    provider_names,
)

API_ROOT: Final = "/api/atlas/v1.0"
API_ROOT_V2: Final = "/api/atlas/v2"
V2_MEDIA_TYPE: Final = "application/vnd.atlas.2023-01-01+json"
"""The v2 resource version this client speaks, in Accept and in the Content-Type of a POST's
body (the spec declares no other for these routes); Atlas picks the answer's shape from it."""
USER_AGENT: Final = f"atlas-endpoint-monitor/{__version__}"
# An interface endpoint document is ~200 bytes; anything near this cap is not one.
MAX_BODY_BYTES: Final = 1024 * 1024
# A Retry-After longer than this is not waited for inside one poll: the caller gets the
# RateLimitedError at once and the next poll tries again.
MAX_RETRY_AFTER_SECONDS: Final = 60.0
MAX_THROTTLE_SECONDS: Final = 300.0
"""The longest pause one 429 or 503 imposes on a project, whatever its Retry-After says
(``inf``, a date in year 9999): a wrong header must not silence a project until a restart."""
MAX_RATE_LIMIT_SPACING_SECONDS: Final = 60.0
"""The widest spacing RateLimit headers may impose between a project's requests: one request
a minute, the slowest refill Atlas' per-minute buckets have (RateLimit-Limit: 1)."""
JSON_PARSE_ERRORS: Final = (ValueError, RecursionError)
"""What json.loads raises for an answer it cannot hold: malformed text or bytes (ValueError,
UnicodeDecodeError), an integer of more digits than Python converts (ValueError), nesting
deeper than the interpreter's stack (RecursionError)."""
BACKOFF_BASE_SECONDS: Final = 0.5
BACKOFF_CAP_SECONDS: Final = 30.0
RATE_LIMIT_LOW_SHARE: Final = 0.1
"""Below this share of RateLimit-Limit left, a project's requests are slowed down."""

REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""Atlas region names (us-east-1, US_EAST_2, CENTRAL_US, EUROPE_WEST): the only text of an
answer that becomes a label value, so anything else is dropped rather than exported."""

log = structlog.get_logger(__name__)

RequestObserver = Callable[[str, str, float], None]
"""Called once per HTTP exchange on the wire (401 challenges included) with
(method, status code or ``"error"``, seconds until the response headers arrived)."""


class ApiVersion(StrEnum):
    """The Administration API generation: where resources live and how they are asked for."""

    V1 = "v1.0"
    """Deprecated by Atlas, AWS only; the default so existing configs keep working."""
    V2 = "v2"

    @property
    def root(self) -> str:
        return API_ROOT if self is ApiVersion.V1 else API_ROOT_V2

    @property
    def media_type(self) -> str:
        """What requests ask answers in (Accept) and send bodies in (Content-Type)."""
        return "application/json" if self is ApiVersion.V1 else V2_MEDIA_TYPE

    def endpoints_path(self, ref: EndpointRef) -> str:
        """The collection a new endpoint is POSTed to."""
        if self is ApiVersion.V1:
            return (
                f"/groups/{ref.group_id}/privateEndpoint/{ref.private_link_id}/interfaceEndpoints"
            )
        return f"{service_path(ref.group_id, ref.cloud_provider, ref.private_link_id)}/endpoint"

    def endpoint_path(self, ref: EndpointRef) -> str:
        # Azure ids are resource paths: their slashes must stay inside one path segment.
        return f"{self.endpoints_path(ref)}/{quote(ref.interface_endpoint_id, safe='')}"


def services_path(group_id: str, provider: CloudProvider) -> str:
    return f"/groups/{group_id}/privateEndpoint/{provider.value}/endpointService"


def service_path(group_id: str, provider: CloudProvider, service_id: str) -> str:
    return f"{services_path(group_id, provider)}/{service_id}"


@dataclass(frozen=True, order=True)
class EndpointRef:
    """The ids that name one private endpoint in Atlas: the project, the endpoint service
    (``private_link_id``) and the endpoint itself, on one cloud provider."""

    group_id: str
    private_link_id: str
    interface_endpoint_id: str
    cloud_provider: CloudProvider = CloudProvider.AWS

    def __str__(self) -> str:
        return f"{self.group_id}/{self.private_link_id}/{self.interface_endpoint_id}"

    @property
    def key(self) -> EndpointRef:
        """What makes two refs the same endpoint: Azure resource ids ignore case."""
        return replace(self, interface_endpoint_id=self._comparable(self.interface_endpoint_id))

    def same_endpoint_id(self, other: str) -> bool:
        return self._comparable(other) == self._comparable(self.interface_endpoint_id)

    def _comparable(self, endpoint_id: str) -> str:
        return PROVIDERS[self.cloud_provider].comparable_id(endpoint_id)


@dataclass(frozen=True)
class InterfaceEndpoint:
    """One valid answer from Atlas about a private endpoint (an AWS interface endpoint, an
    Azure private endpoint or a GCP endpoint group)."""

    interface_endpoint_id: str
    connection_status: ConnectionStatus
    raw_status: str
    error_message: str | None
    delete_requested: bool

    @classmethod
    def from_json(
        cls, document: object, provider: CloudProvider = CloudProvider.AWS
    ) -> InterfaceEndpoint:
        """Strict on types, because a wrong shape means we would report something false."""
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        _check_provider(document, provider)
        spec = PROVIDERS[provider]
        id_field, status_field = spec.endpoint_id_field, spec.status_field
        endpoint_id = document.get(id_field)
        raw_status = document.get(status_field)
        delete_requested = document.get("deleteRequested", False)
        if not isinstance(endpoint_id, str):
            raise ValueError(f"{id_field} is missing or not a string")
        if not isinstance(raw_status, str):
            raise ValueError(f"{status_field} is missing or not a string")
        if not isinstance(delete_requested, bool):
            raise ValueError("deleteRequested is not a boolean")
        return cls(
            interface_endpoint_id=endpoint_id,
            connection_status=ConnectionStatus.parse(raw_status, provider),
            raw_status=raw_status,
            error_message=_error_message(document),
            delete_requested=delete_requested,
        )


@dataclass(frozen=True)
class EndpointService:
    """One valid answer from Atlas about an endpoint service, with the endpoints it has."""

    service_id: str
    cloud_provider: CloudProvider
    region: str | None
    status: ServiceStatus
    raw_status: str
    error_message: str | None
    endpoint_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, document: object, provider: CloudProvider) -> EndpointService:
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        _check_provider(document, provider)
        service_id = document.get("id")
        raw_status = document.get("status")
        region = document.get("regionName")
        endpoints_field = PROVIDERS[provider].service_endpoints_field
        endpoint_ids = document.get(endpoints_field) or []
        if not isinstance(service_id, str) or not OBJECT_ID.fullmatch(service_id):
            raise ValueError("id is missing or not 24 hexadecimal characters")
        if not isinstance(raw_status, str):
            raise ValueError("status is missing or not a string")
        if region is not None and not isinstance(region, str):
            raise ValueError("regionName is not a string")
        if region is not None and not REGION_NAME.fullmatch(region):
            # The status is still worth having; only the label value is not.
            log.warning(
                "endpoint_service_region_unusable",
                private_link_id=service_id,
                region_length=len(region),
                region_start=ascii(region[:40]),
            )
            region = None
        if not isinstance(endpoint_ids, list) or not all(
            isinstance(endpoint_id, str) for endpoint_id in endpoint_ids
        ):
            raise ValueError(f"{endpoints_field} is not a list of strings")
        return cls(
            service_id=service_id.lower(),
            cloud_provider=provider,
            region=region,
            status=ServiceStatus.parse(raw_status, provider),
            raw_status=raw_status,
            error_message=_error_message(document),
            endpoint_ids=tuple(endpoint_ids),
        )


def _check_provider(document: dict[str, Any], provider: CloudProvider) -> None:
    cloud_provider = document.get("cloudProvider", provider.value)
    if cloud_provider != provider.value:
        raise ValueError(f"cloudProvider is {cloud_provider!r}, not {provider.value}")


def _error_message(document: dict[str, Any]) -> str | None:
    error_message = document.get("errorMessage")
    if error_message is not None and not isinstance(error_message, str):
        raise ValueError("errorMessage is neither null nor a string")
    return error_message or None


@dataclass(frozen=True)
class ApiKey:
    """A programmatic API key: HTTP Digest with the public key as user."""

    public_key: str
    private_key: SecretStr


@dataclass(frozen=True)
class ServiceAccount:
    """An Atlas service account: OAuth 2 client credentials for a Bearer token."""

    client_id: str
    client_secret: SecretStr


Login = ApiKey | ServiceAccount


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


class LocalResourceError(AtlasUnreachableError):
    """No answer because this host ran out of something the request needed (file
    descriptors, buffers, memory) before it could leave: it says nothing about Atlas, so it
    must never count towards the ``unreachable`` alert. ``cause`` is the errno's name."""

    def __init__(self, message: str, *, method: str, path: str, cause: str) -> None:
        super().__init__(message, method=method, path=path, request_sent=False)
        self.cause = cause


LOCAL_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""The errors asyncio itself treats as "out of system resource" (see its accept loop)."""


def _raise_if_local(error: BaseException, method: str, path: str) -> None:
    """Raise LocalResourceError when ``error`` is a local resource shortage (aiohttp wraps
    the OSError of a socket it could not create in ClientConnectorError.os_error)."""
    for candidate in (error, getattr(error, "os_error", None), error.__cause__):
        if isinstance(candidate, OSError) and candidate.errno in LOCAL_RESOURCE_ERRNOS:
            raise LocalResourceError(
                f"not sent, this host is out of resources: {os.strerror(candidate.errno)}",
                method=method,
                path=path,
                cause=errno.errorcode[candidate.errno],
            ) from None


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
        except (TypeError, ValueError, OverflowError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_THROTTLE_SECONDS)


class AtlasClient:
    """One HTTP session with preemptive Digest auth, shared by every call of the process.

    Use it as ``async with AtlasClient(...) as client``; the session is created on entry
    (inside the running loop, as aiohttp wants) and closed on exit.
    """

    def __init__(
        self,
        *,
        base_url: str,
        login: Login,
        timeout_seconds: float,
        max_retries: int,
        api_version: ApiVersion = ApiVersion.V1,
        max_connections: int = 8,
        max_requests_per_minute: int | None = None,
        observer: RequestObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api = api_version
        self._api_url = self._base_url + api_version.root
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_retries = max_retries
        self._max_connections = max_connections
        self._observer = observer
        self._sleep = sleep
        self._jitter = jitter
        self._session: aiohttp.ClientSession | None = None
        self._request_slots: asyncio.Semaphore | None = None
        """``max_connections`` requests in flight at most; taken only once a request is due."""
        self._project_turns: dict[str, asyncio.Lock] = {}
        """Project (group) id -> held by the one request of the project that is next to go."""
        self._first_exchange_done: asyncio.Event | None = None
        self._project_pauses: dict[str, float] = {}
        """Project (group) id -> monotonic time before which no request for it is sent."""
        self._spacing = 60.0 / max_requests_per_minute if max_requests_per_minute else 0.0
        self._slowed_projects: dict[str, float] = {}
        """Project (group) id -> spacing its RateLimit headers call for while it runs low."""
        self._next_slots: dict[str, float] = {}
        """Project (group) id -> monotonic time its next request may start, when paced."""

    @property
    def api_version(self) -> ApiVersion:
        return self._api

    def __repr__(self) -> str:
        return f"AtlasClient(api_url={self._api_url!r}, login={self._login!r})"

    async def __aenter__(self) -> AtlasClient:
        self._first_exchange_done = None
        self._request_slots = asyncio.Semaphore(self._max_connections)
        self._project_turns = {}
        middlewares: list[aiohttp.ClientMiddlewareType] = [self._auth_middleware()]
        if self._observer is not None:
            # Inside the auth middleware, so challenges and re-sent requests are each seen.
            middlewares.append(self._observe_exchange)
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            headers={"Accept": self._api.media_type, "User-Agent": USER_AGENT},
            middlewares=middlewares,
            raise_for_status=False,
        )
        return self

    def _auth_middleware(self) -> aiohttp.ClientMiddlewareType:
        if isinstance(self._login, ServiceAccount):
            # Imported here: the login module builds on this module's error types.
            from monitor.oauth import ServiceAccountLogin, token_url

            return ServiceAccountLogin(
                token_url=token_url(self._base_url),
                client_id=self._login.client_id,
                client_secret=self._login.client_secret,
                timeout=self._timeout,
            )
        return aiohttp.DigestAuthMiddleware(
            self._login.public_key, self._login.private_key.get_secret_value(), preemptive=True
        )

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
        path = self._api.endpoint_path(ref)
        return _endpoint_from(await self._with_retries("GET", path), ref, "GET", path)

    async def get_endpoint_service(
        self, group_id: str, provider: CloudProvider, service_id: str
    ) -> EndpointService:
        """The endpoint service itself (v2 only): its status is Atlas' half of the link."""
        path = service_path(group_id, provider, service_id)
        service = _service_from(await self._with_retries("GET", path), provider, path)
        if service.service_id != service_id.lower():
            raise AtlasBadResponseError(
                f"answer is about service {service.service_id!r}, not the one asked for",
                method="GET",
                path=path,
            )
        return service

    async def list_endpoint_services(
        self, group_id: str, provider: CloudProvider
    ) -> list[EndpointService]:
        """Every endpoint service of the project on ``provider`` (v2 only), for discovery."""
        path = services_path(group_id, provider)
        document = await self._with_retries("GET", path)
        if isinstance(document, dict) and isinstance(document.get("results"), list):
            document = document["results"]  # the paginated form some Atlas resources use
        if not isinstance(document, list):
            raise AtlasBadResponseError(
                f"expected a JSON array of endpoint services, got {type(document).__name__}",
                method="GET",
                path=path,
            )
        return [_service_from(item, provider, path) for item in document]

    async def delete_interface_endpoint(self, ref: EndpointRef) -> bool:
        """Ask Atlas to remove the endpoint; False when it was already gone.

        A 404 after a retried DELETE usually means an earlier attempt went through.
        """
        try:
            await self._with_retries("DELETE", self._api.endpoint_path(ref))
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
                return await self._with_retries("GET", self._api.endpoint_path(ref))
            except AtlasNotFoundError:
                log.info("atlas_post_not_applied", endpoint=str(ref), cause=error.summary)
                raise error from None

        if not PROVIDERS[ref.cloud_provider].can_be_added:
            # Azure needs the endpoint's IP address and GCP its forwarding rules, which
            # only the operator's own cloud knows; the config refuses to ask for it.
            added = provider_names(lambda each: each.can_be_added)
            raise ValueError(f"only {added} endpoints can be added, not {ref.cloud_provider}")
        key = "interfaceEndpointId" if self._api is ApiVersion.V1 else "id"
        path = self._api.endpoints_path(ref)
        document = await self._with_retries(
            "POST", path, {key: ref.interface_endpoint_id}, before_retry=find_applied_post
        )
        return _endpoint_from(document, ref, "POST", path)

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
                # Its own back-off already honoured the 429 that set the project's pause.
                async with self._request_slot(method, path, respect_pause=not waited_out_429):
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

    async def _pace(self, group_id: str) -> None:
        """Space the project's requests evenly, so a cycle of many endpoints in one project
        reaches Atlas as a steady trickle under its limit instead of a burst that earns 429s.

        Slots follow a schedule: a request that had to wait for a request slot starts late,
        but the next one keeps its own slot, so such delays never add up over a cycle."""
        spacing = max(self._spacing, self._slowed_projects.get(group_id, 0.0))
        if not spacing:
            return
        now = time.monotonic()
        slot = max(now, self._next_slots.get(group_id, now))
        self._next_slots[group_id] = slot + spacing
        if slot > now:
            await self._sleep(slot - now)

    @contextlib.asynccontextmanager
    async def _request_slot(
        self, method: str, path: str, *, respect_pause: bool
    ) -> AsyncIterator[None]:
        """Hold one of the ``max_connections`` request slots for one exchange, taken once the
        project's turn has come, its pause is over and its pace allows, never before.

        A project's requests line up for their turn; only the one whose turn it is waits out
        the project's pause and spacing, then for a request slot. So no request holds a
        slot while its project keeps it waiting: a slot that would idle while the other
        projects' requests could go out (a whole cycle held hostage to one project). Each
        project has at most one request waiting for a slot, so busy slots go round the
        projects in turn.
        """
        if self._request_slots is None:
            raise RuntimeError("AtlasClient used outside 'async with'")
        group_id = _project_of(path)
        async with self._project_turns.setdefault(group_id, asyncio.Lock()):
            if respect_pause:
                await self._respect_project_pause(method, path)
            await self._pace(group_id)
            await self._request_slots.acquire()
        try:
            yield
        finally:
            self._request_slots.release()

    def _note_rate_limit(self, path: str, headers: CIMultiDictProxy[str]) -> None:
        """Slow a project down while Atlas says its bucket runs low, before it answers 429.

        Atlas' buckets refill per minute, so while fewer than a tenth of ``RateLimit-Limit``
        requests remain, the project's requests are spaced to the refill rate.
        """
        limit = _count_header(headers, "RateLimit-Limit")
        remaining = _count_header(headers, "RateLimit-Remaining")
        if not limit or remaining is None:
            return
        group_id = _project_of(path)
        if remaining <= max(1.0, limit * RATE_LIMIT_LOW_SHARE):
            spacing = min(60.0 / limit, MAX_RATE_LIMIT_SPACING_SECONDS)
            if group_id not in self._slowed_projects:
                log.warning(
                    "atlas_project_slowing_down",
                    group_id=group_id,
                    rate_limit=limit,
                    rate_limit_remaining=remaining,
                    spacing_seconds=round(spacing, 3),
                )
            self._slowed_projects[group_id] = spacing
        elif self._slowed_projects.pop(group_id, None) is not None:
            log.info(
                "atlas_project_rate_recovered", group_id=group_id, rate_limit_remaining=remaining
            )

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
        # Encoded already (Azure ids carry %2F), so yarl must not normalise it again.
        url = yarl.URL(self._api_url + path, encoded=True)
        body, headers = None, None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {"Content-Type": self._api.media_type}
        try:
            async with session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response:
                self._note_rate_limit(path, response.headers)
                body = await read_capped(response, method, path)
                return _interpret(method, path, response.status, response.headers, body)
        except AtlasError:
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            _raise_if_local(error, method, path)
            cause = getattr(error, "os_error", None)
            reason = (cause.strerror if cause else None) or str(cause or "timed out")
            message, request_sent = f"cannot connect: {reason}", False
        except TimeoutError:
            message, request_sent = f"no answer within {self._timeout.total:g} s", True
        except (aiohttp.ClientError, OSError) as error:
            _raise_if_local(error, method, path)
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
    # v2 errors repeat the code in a header, which outlives a body a proxy replaced.
    error_code = error_code or headers.get("X-Error-Code") or None
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


def _endpoint_from(document: object, ref: EndpointRef, method: str, path: str) -> InterfaceEndpoint:
    try:
        endpoint = InterfaceEndpoint.from_json(document, ref.cloud_provider)
    except ValueError as error:
        raise AtlasBadResponseError(
            f"unexpected answer shape: {error}", method=method, path=path
        ) from None
    if not ref.same_endpoint_id(endpoint.interface_endpoint_id):
        raise AtlasBadResponseError(
            f"answer is about {endpoint.interface_endpoint_id!r}, not the endpoint asked for",
            method=method,
            path=path,
        )
    return endpoint


def _service_from(document: object, provider: CloudProvider, path: str) -> EndpointService:
    try:
        return EndpointService.from_json(document, provider)
    except ValueError as error:
        raise AtlasBadResponseError(
            f"unexpected endpoint service shape: {error}", method="GET", path=path
        ) from None


def _count_header(headers: CIMultiDictProxy[str], name: str) -> float | None:
    value = headers.get(name)
    try:
        count = float(value) if value is not None else None
    except ValueError:
        return None
    return count if count is not None and math.isfinite(count) and count >= 0 else None


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
