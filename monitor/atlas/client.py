"""The Atlas client: one session, preemptive Digest auth (or a service account's token), and
retries of transient failures, so callers only ever see the final outcome."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import structlog
import yarl

from monitor.atlas.errors import (
    AtlasBadResponseError,
    AtlasError,
    AtlasNotFoundError,
    AtlasRateLimitedError,
    AtlasServerError,
    AtlasUnreachableError,
)
from monitor.atlas.http import USER_AGENT, RequestObserver, interpret, no_answer_error, read_capped
from monitor.atlas.model import (
    ApiVersion,
    EndpointRef,
    EndpointService,
    InterfaceEndpoint,
    Login,
    ServiceAccount,
    service_path,
    services_path,
)
from monitor.atlas.oauth import ServiceAccountLogin, token_url
from monitor.atlas.pacing import MAX_RETRY_AFTER_SECONDS, ProjectPacer, backoff_ceiling
from monitor.providers import (
    PROVIDERS,
    CloudProvider,
    provider_names,
)

log = structlog.get_logger(__name__)


_TRANSIENT_ERRORS = (AtlasRateLimitedError, AtlasServerError, AtlasUnreachableError)


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
        self._first_exchange_done: asyncio.Event | None = None
        self._pacer = ProjectPacer(
            max_connections=max_connections,
            max_requests_per_minute=max_requests_per_minute,
            sleep=sleep,
        )

    @property
    def api_version(self) -> ApiVersion:
        return self._api

    def __repr__(self) -> str:
        return f"AtlasClient(api_url={self._api_url!r}, login={self._login!r})"

    async def __aenter__(self) -> AtlasClient:
        self._first_exchange_done = None
        self._pacer.open()
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
        path = self._api.endpoints_path(ref)
        body = {self._api.added_endpoint_field: ref.interface_endpoint_id}
        document = await self._with_retries("POST", path, body, before_retry=find_applied_post)
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
                async with self._pacer.request_slot(method, path, respect_pause=not waited_out_429):
                    return await self._exchange(method, path, json_body)
            except _TRANSIENT_ERRORS as error:
                throttled = isinstance(error, AtlasRateLimitedError)
                if throttled:
                    self._pacer.pause_project(path, attempt, error)
                if attempt >= self._max_retries or _wait_too_long(error):
                    raise
                if before_retry is not None:
                    answer = await before_retry(error)
                    if answer is not None:
                        return answer
                await self._back_off(method, path, attempt, error)
                waited_out_429 = throttled
                attempt += 1

    async def _back_off(self, method: str, path: str, attempt: int, error: AtlasError) -> None:
        """Full jitter (AWS architecture blog), but never sooner than Atlas' Retry-After."""
        delay = self._jitter() * backoff_ceiling(attempt)
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
                self._pacer.note_rate_limit(path, response.headers)
                body = await read_capped(response, method, path)
                return interpret(method, path, response.status, response.headers, body)
        except AtlasError:
            raise
        except (aiohttp.ClientError, OSError) as error:
            if type(error) is aiohttp.ClientError:
                # The bare class is what the Digest middleware raises for a challenge it
                # cannot answer: Atlas (or what poses as it) spoke, but not Digest as agreed.
                raise AtlasBadResponseError(
                    f"unusable Digest challenge: {error}", method=method, path=path
                ) from None
            raise no_answer_error(
                error, method=method, path=path, timeout_seconds=self._timeout.total
            ) from None

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


def _outcome_unknown(error: AtlasError) -> bool:
    if isinstance(error, AtlasUnreachableError):
        return error.request_sent
    return isinstance(error, AtlasServerError)


def _wait_too_long(error: AtlasError) -> bool:
    retry_after = getattr(error, "retry_after", None)
    return retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS
