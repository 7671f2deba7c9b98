"""The fake Atlas API as an aiohttp application, and the methods tests steer it with."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from http import HTTPStatus
from typing import Any, Literal

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from monitor.atlas import API_ROOT
from monitor.providers import PROVIDERS, ConnectionStatus, spec_of
from monitor.simulator.auth import (
    _NONCE_CAPACITY,
    _TOKEN_CAPACITY,
    OAUTH_TOKEN_PATH,
    UNAUTHORIZED_BODY,
    _answer_token_request,
    _AuthVerdict,
    _challenge_header,
    _digest_is_valid,
    _NonceRegistry,
    _parse_digest_authorization,
    _ServiceAccount,
    _TokenBucket,
    _TokenRegistry,
)
from monitor.simulator.documents import (
    _atlas_body,
    _interface_endpoint_id_from_body,
    _v2_endpoint_body,
    _v2_endpoint_from_body,
    _v2_service_body,
)
from monitor.simulator.faults import Fault, _ArmedFault, _fault_answer, _send_truncated
from monitor.simulator.http import (
    _MEDIA_TYPE_KEY,
    API_V2_ROOT,
    V2_MEDIA_TYPE,
    V2_RESOURCE_VERSION,
    _accepts_served_version,
    _AtlasError,
    _check_path_ids,
    _default_error_code,
    _is_v2,
    _json_response,
    _not_found,
    _serves_version,
)
from monitor.simulator.routes import (
    _CONTROL_ENDPOINT,
    _CONTROL_SERVICE,
    _ENDPOINT_COLLECTION,
    _ENDPOINT_RESOURCE,
    _V2_ENDPOINT,
    _V2_ENDPOINTS,
    _V2_SERVICE,
    _V2_SERVICES,
    _control_error,
    _control_key,
    _endpoint_key,
    _EndpointUpdate,
    _path_key,
    _service_key,
    _ServiceUpdate,
    _v2_path_key,
)
from monitor.simulator.scenario import EndpointKey, Scenario, ServiceKey, TimelineStep
from monitor.simulator.state import (
    DROPPED,
    SimulatorStats,
    _EndpointDetails,
    _EndpointScript,
    _EndpointState,
    _ServiceScript,
    _ServiceState,
)

log = structlog.get_logger(__name__)


def _progression(cloud_provider: str, *, v2: bool) -> list[str]:
    """A new endpoint's statuses after a POST, one per step_seconds, ending AVAILABLE; v1.0
    starts (AWS) endpoints in NONE, a status the v2 enum does not have."""
    provisioning = spec_of(cloud_provider).provisioning
    if not v2:
        provisioning = (ConnectionStatus.NONE, *provisioning)
    return [status.value for status in (*provisioning, ConnectionStatus.AVAILABLE)]


class Simulator:
    """The fake Atlas API as an aiohttp application plus methods to steer it from tests.

    ``client_id``/``client_secret`` enable the service-account login (``POST
    /api/oauth/token``); with either None every token request is answered 401 invalid_client.

    The steering methods take an endpoint's ids as the scenario file does: the endpoint
    service id as ``private_link_id`` and the provider's endpoint id (vpce id, Azure resource
    id, GCP endpoint group name) as ``interface_endpoint_id``. The provider follows from the
    id's form (``vpce-...`` AWS, ``/subscriptions/...`` AZURE, anything else GCP) unless
    ``cloud_provider`` names it; an id malformed for its provider raises ValueError.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        public_key: str,
        private_key: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.stats = SimulatorStats()
        self._public_key = public_key
        self._private_key = private_key
        self._account = (
            None
            if client_id is None or client_secret is None
            else _ServiceAccount(client_id, client_secret)
        )
        self._clock = clock
        self._sleep = sleep
        self._nonces = _NonceRegistry(_NONCE_CAPACITY)
        self._tokens = _TokenRegistry(_TOKEN_CAPACITY)
        self._buckets: dict[str, _TokenBucket] = {}
        self._scripts: dict[EndpointKey, _EndpointScript] = {}
        self._details: dict[EndpointKey, _EndpointDetails] = {}
        self._services: dict[ServiceKey, _ServiceScript] = {}
        self._faults: defaultdict[EndpointKey, list[_ArmedFault]] = defaultdict(list)
        started_at = clock()
        for service in scenario.endpoint_services:
            self._services[service.key()] = _ServiceScript(
                _ServiceState(service.status, service.error_message),
                started_at,
                service.region or PROVIDERS[service.cloud_provider].simulator_region,
                service.timeline,
            )
        for endpoint in scenario.endpoints:
            key = endpoint.key()
            initial = _EndpointState(
                exists=endpoint.exists,
                status=endpoint.status,
                error_message=endpoint.error_message,
                delete_requested=endpoint.delete_requested,
            )
            self._scripts[key] = _EndpointScript(initial, started_at, endpoint.timeline)
            self._details[key] = _EndpointDetails.derived(endpoint.interface_endpoint_id)
            self._ensure_service(key.service(), started_at)
            for fault in endpoint.faults:
                self._arm(key, fault)
        self.app = self._build_app()

    def set_endpoint(
        self,
        group_id: str,
        private_link_id: str,
        interface_endpoint_id: str,
        *,
        status: str | None = None,
        error_message: str | None = None,
        delete_requested: bool = False,
        cloud_provider: str | None = None,
    ) -> None:
        """Pin an endpoint to a fixed state, ending any timeline or progression it had.

        ``status=None`` keeps the current status of an existing endpoint and gives a new one
        the provider's first status (AWS PENDING_ACCEPTANCE, Azure and GCP INITIATING), so a
        test can set only the error message. A new endpoint's service exists from then on.
        """
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id, cloud_provider)
        if status is None:
            current = self._current_state(key)
            status = (
                _progression(key.cloud_provider, v2=True)[0] if current is None else current.status
            )
        state = _EndpointState(
            exists=True,
            status=status,
            error_message=error_message,
            delete_requested=delete_requested,
        )
        now = self._clock()
        self._scripts[key] = _EndpointScript(state, now)
        self._details.setdefault(key, _EndpointDetails.derived(interface_endpoint_id))
        self._ensure_service(key.service(), now)
        log.info("simulator_endpoint_set", **key._asdict(), status=status)

    def remove_endpoint(
        self,
        group_id: str,
        private_link_id: str,
        interface_endpoint_id: str,
        *,
        cloud_provider: str | None = None,
    ) -> None:
        """Make the endpoint answer 404 until it is set or POSTed again."""
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id, cloud_provider)
        self._scripts.pop(key, None)
        self._details.pop(key, None)
        log.info("simulator_endpoint_removed", **key._asdict())

    def add_fault(
        self,
        group_id: str,
        private_link_id: str,
        interface_endpoint_id: str,
        fault: Fault,
        *,
        cloud_provider: str | None = None,
    ) -> None:
        """Append a fault behind the endpoint's existing ones; it may exist or not."""
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id, cloud_provider)
        self._arm(key, fault)
        log.info("simulator_fault_added", **key._asdict(), fault=fault.model_dump(mode="json"))

    def endpoint_state(
        self,
        group_id: str,
        private_link_id: str,
        interface_endpoint_id: str,
        *,
        cloud_provider: str | None = None,
        api_version: Literal["v1.0", "v2"] | None = None,
    ) -> dict[str, Any] | None:
        """The body a GET would answer now, or None where it would answer 404.

        ``api_version`` None means v1.0's body for an AWS endpoint and v2's for the others;
        v1.0 does not show Azure and GCP endpoints, so for them "v1.0" gives None.
        """
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id, cloud_provider)
        state = self._current_state(key)
        served_by_v1 = spec_of(key.cloud_provider).served_by_v1
        if api_version is None:
            api_version = "v1.0" if served_by_v1 else "v2"
        if state is None or (api_version == "v1.0" and not served_by_v1):
            return None
        if api_version == "v1.0":
            return _atlas_body(key.interface_endpoint_id, state)
        return _v2_endpoint_body(key.cloud_provider, self._details_of(key), state)

    def set_service(
        self,
        group_id: str,
        cloud_provider: str,
        service_id: str,
        *,
        status: str | None = None,
        error_message: str | None = None,
        region: str | None = None,
    ) -> None:
        """Pin an endpoint service to a fixed state, ending its timeline; creates it if need
        be. ``status``/``region`` None keep the current ones (new: AVAILABLE, the provider's
        default region). Raises ValueError for malformed ids or an unknown provider."""
        key = _service_key(group_id, cloud_provider, service_id)
        current = self._services.get(key)
        now = self._clock()
        if status is None:
            status = "AVAILABLE" if current is None else current.state_at(now).status
        if region is None:
            region = (
                spec_of(key.cloud_provider).simulator_region if current is None else current.region
            )
        self._services[key] = _ServiceScript(_ServiceState(status, error_message), now, region)
        log.info("simulator_service_set", **key._asdict(), status=status)

    def service_state(
        self, group_id: str, cloud_provider: str, service_id: str
    ) -> dict[str, Any] | None:
        """The v2 document a GET of the service would answer now, or None for a 404."""
        key = _service_key(group_id, cloud_provider, service_id)
        return self._service_document(key) if key in self._services else None

    def _arm(self, key: EndpointKey, fault: Fault) -> None:
        self._faults[key].append(_ArmedFault(fault, remaining=fault.times))

    def _ensure_service(self, key: ServiceKey, now: float) -> None:
        """A service that endpoints name exists even when nobody listed it."""
        if key not in self._services:
            region = spec_of(key.cloud_provider).simulator_region
            self._services[key] = _ServiceScript(_ServiceState("AVAILABLE", None), now, region)

    def _current_state(self, key: EndpointKey) -> _EndpointState | None:
        script = self._scripts.get(key)
        if script is None:
            return None
        state = script.state_at(self._clock())
        return state if state.exists else None

    def _details_of(self, key: EndpointKey) -> _EndpointDetails:
        details = self._details.get(key)
        return _EndpointDetails.derived(key.interface_endpoint_id) if details is None else details

    def _service_document(self, key: ServiceKey) -> dict[str, Any]:
        script = self._services[key]
        endpoint_ids = [
            self._details_of(endpoint_key).endpoint_id
            for endpoint_key in self._scripts
            if endpoint_key.service() == key and self._current_state(endpoint_key) is not None
        ]
        return _v2_service_body(key, script, script.state_at(self._clock()), endpoint_ids)

    def _build_app(self) -> web.Application:
        api = web.Application(middlewares=[self._api_middleware])
        api.router.add_get(_ENDPOINT_RESOURCE, self._handle_get, allow_head=False)
        api.router.add_delete(_ENDPOINT_RESOURCE, self._handle_delete)
        api.router.add_post(_ENDPOINT_COLLECTION, self._handle_post)
        api_v2 = web.Application(middlewares=[self._api_middleware])
        api_v2.router.add_get(_V2_SERVICES, self._handle_v2_list_services, allow_head=False)
        api_v2.router.add_get(_V2_SERVICE, self._handle_v2_get_service, allow_head=False)
        api_v2.router.add_get(_V2_ENDPOINT, self._handle_v2_get, allow_head=False)
        api_v2.router.add_delete(_V2_ENDPOINT, self._handle_v2_delete)
        api_v2.router.add_post(_V2_ENDPOINTS, self._handle_v2_post)
        app = web.Application()
        app.router.add_get("/_simulator/stats", self._control_stats)
        app.router.add_put(_CONTROL_ENDPOINT, self._control_set_endpoint)
        app.router.add_delete(_CONTROL_ENDPOINT, self._control_remove_endpoint)
        app.router.add_post(_CONTROL_ENDPOINT + "/faults", self._control_add_fault)
        app.router.add_put(_CONTROL_SERVICE, self._control_set_service)
        app.router.add_post(OAUTH_TOKEN_PATH, self._handle_token)
        app.add_subapp(API_ROOT, api)
        app.add_subapp(API_V2_ROOT, api_v2)
        return app

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._answer_api_request(request, handler)
        # A truncated answer is prepared here already: its status line did go out.
        sent = response.prepared or request.transport is not None
        status = response.status if sent else DROPPED
        self.stats.requests[(request.method, status)] += 1
        log.debug("simulator_request", method=request.method, path=request.path, status=status)
        return response

    async def _answer_api_request(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        versioned = True
        if _is_v2(request):
            versioned = _accepts_served_version(request.headers.get(hdrs.ACCEPT, ""))
            if versioned:
                request[_MEDIA_TYPE_KEY] = V2_MEDIA_TYPE
        verdict = self._authenticate(request)
        if verdict is _AuthVerdict.BEARER_REJECTED:
            self.stats.challenges += 1
            return _json_response(request, HTTPStatus.UNAUTHORIZED, UNAUTHORIZED_BODY)
        if verdict is not _AuthVerdict.ACCEPTED:
            return self._challenge(request, stale=verdict is _AuthVerdict.STALE)
        rate_limit_headers: dict[str, str] = {}
        try:
            if not versioned:
                raise _AtlasError(
                    HTTPStatus.NOT_ACCEPTABLE,
                    "INVALID_VERSION_DATE",
                    "The Accept header must name an API version, "
                    f"application/vnd.atlas.YYYY-MM-DD+json, from {V2_RESOURCE_VERSION} on.",
                )
            _check_path_ids(request)
            rate_limit_headers = self._take_rate_limit_token(request.match_info.get("groupId"))
            response = await handler(request)
        except _AtlasError as error:
            response = error.response(request)
        except web.HTTPException as error:
            detail = f"{error.reason} for {request.method} {request.path}."
            response = _AtlasError(
                error.status, _default_error_code(error.status), detail
            ).response(request)
        response.headers.update(rate_limit_headers)
        return response

    def _authenticate(self, request: web.Request) -> _AuthVerdict:
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            token = token.strip()
            if token and self._tokens.is_valid(token, self._clock()):
                return _AuthVerdict.ACCEPTED
            return _AuthVerdict.BEARER_REJECTED
        credentials = _parse_digest_authorization(header)
        if credentials is None:
            return _AuthVerdict.REJECTED
        issued_at = self._nonces.issued_at(credentials.nonce)
        if issued_at is None or not _digest_is_valid(
            credentials,
            method=request.method,
            request_uri=request.raw_path,
            username=self._public_key,
            password=self._private_key,
        ):
            return _AuthVerdict.REJECTED
        if self._clock() - issued_at > self.scenario.nonce_lifetime_seconds:
            return _AuthVerdict.STALE
        return _AuthVerdict.ACCEPTED

    def _challenge(self, request: web.Request, *, stale: bool) -> web.Response:
        self.stats.challenges += 1
        nonce = self._nonces.issue(self._clock())
        headers: dict[str, str] = {hdrs.WWW_AUTHENTICATE: _challenge_header(nonce, stale=stale)}
        return _json_response(request, HTTPStatus.UNAUTHORIZED, UNAUTHORIZED_BODY, headers)

    def _take_rate_limit_token(self, group_id: str | None) -> dict[str, str]:
        """Headers for the answer; raises the 429 when the group's bucket is empty."""
        per_minute = self.scenario.rate_limit_per_minute
        if per_minute is None or group_id is None:
            return {}
        now = self._clock()
        bucket = self._buckets.setdefault(
            group_id, _TokenBucket(per_minute=per_minute, tokens=per_minute, updated_at=now)
        )
        if bucket.take(now):
            return bucket.headers()
        retry_after = bucket.seconds_until_token()
        raise _AtlasError(
            HTTPStatus.TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            f"You have exceeded the rate limit for group {group_id}; retry in {retry_after} s.",
            headers={**bucket.headers(), hdrs.RETRY_AFTER: str(retry_after)},
        )

    async def _handle_token(self, request: web.Request) -> web.Response:
        response = await _answer_token_request(
            request,
            self._account,
            self._tokens,
            self._clock,
            self.scenario.token_lifetime_seconds,
        )
        self.stats.token_requests[response.status] += 1
        log.debug("simulator_token_request", status=response.status)
        return response

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        return await self._answer_with_faults(request, _path_key(request), self._read)

    async def _handle_delete(self, request: web.Request) -> web.StreamResponse:
        return await self._answer_with_faults(request, _path_key(request), self._delete)

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        key = EndpointKey(
            request.match_info["groupId"],
            request.match_info["privateLinkId"],
            await _interface_endpoint_id_from_body(request),
        )
        return await self._answer_with_faults(request, key, self._create)

    async def _handle_v2_list_services(self, request: web.Request) -> web.Response:
        group_id = request.match_info["groupId"]
        cloud_provider = request.match_info["cloudProvider"]
        documents = [
            self._service_document(key)
            for key in self._services
            if key.group_id == group_id and key.cloud_provider == cloud_provider
        ]
        return _json_response(request, HTTPStatus.OK, documents)

    async def _handle_v2_get_service(self, request: web.Request) -> web.Response:
        match = request.match_info
        key = ServiceKey(match["groupId"], match["cloudProvider"], match["serviceId"])
        if key not in self._services:
            raise _not_found(request)
        return _json_response(request, HTTPStatus.OK, self._service_document(key))

    async def _handle_v2_get(self, request: web.Request) -> web.StreamResponse:
        key = _v2_path_key(request)
        endpoint_id = request.match_info["endpointId"]
        return await self._answer_with_faults(request, key, self._read, endpoint_id)

    async def _handle_v2_delete(self, request: web.Request) -> web.StreamResponse:
        key = _v2_path_key(request)
        endpoint_id = request.match_info["endpointId"]
        return await self._answer_with_faults(request, key, self._delete, endpoint_id)

    async def _handle_v2_post(self, request: web.Request) -> web.StreamResponse:
        match = request.match_info
        cloud_provider = match["cloudProvider"]
        if ServiceKey(match["groupId"], cloud_provider, match["serviceId"]) not in self._services:
            raise _not_found(request)
        if not _serves_version(request.headers.get(hdrs.CONTENT_TYPE, "")):
            raise _AtlasError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                f"The request body must be {V2_MEDIA_TYPE.partition(';')[0]}.",
            )
        details = await _v2_endpoint_from_body(request, cloud_provider)
        key = EndpointKey(
            match["groupId"],
            match["serviceId"],
            spec_of(cloud_provider).comparable_id(details.endpoint_id),
            cloud_provider,
        )

        def create(request: web.Request, key: EndpointKey) -> web.Response:
            return self._create(request, key, details)

        return await self._answer_with_faults(request, key, create, details.endpoint_id)

    async def _answer_with_faults(
        self,
        request: web.Request,
        key: EndpointKey,
        answer: Callable[[web.Request, EndpointKey], web.Response],
        endpoint_id: str | None = None,
    ) -> web.StreamResponse:
        counted_id = key.interface_endpoint_id if endpoint_id is None else endpoint_id
        self.stats.by_endpoint[(request.method, counted_id)] += 1
        fault = self._take_fault(key, request.method)
        if fault is None:
            return answer(request, key)
        log.debug("simulator_fault_applied", **key._asdict(), fault=fault.model_dump(mode="json"))
        if fault.latency_seconds:
            await self._sleep(fault.latency_seconds)
        if fault.drop_connection:
            request.protocol.force_close()
            # aiohttp insists on a response object; with the transport gone it is never sent.
            return web.Response()
        response = _fault_answer(request, fault)
        if response is None:
            response = answer(request, key)
        if fault.retry_after is not None:
            response.headers[hdrs.RETRY_AFTER] = str(fault.retry_after)
        if fault.truncate_body:
            return await _send_truncated(request, response)
        return response

    def _take_fault(self, key: EndpointKey, method: str) -> Fault | None:
        armed_faults = self._faults.get(key, [])
        for index, armed in enumerate(armed_faults):
            if method in armed.fault.methods:
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        # Used up: forgotten, so faults added for hours do not pile up.
                        del armed_faults[index]
                return armed.fault
        return None

    def _endpoint_body(
        self, request: web.Request, key: EndpointKey, state: _EndpointState
    ) -> dict[str, Any]:
        if _is_v2(request):
            return _v2_endpoint_body(key.cloud_provider, self._details_of(key), state)
        return _atlas_body(key.interface_endpoint_id, state)

    def _read(self, request: web.Request, key: EndpointKey) -> web.Response:
        state = self._current_state(key)
        if state is None:
            return _not_found(request).response(request)
        return _json_response(request, HTTPStatus.OK, self._endpoint_body(request, key, state))

    def _create(
        self, request: web.Request, key: EndpointKey, details: _EndpointDetails | None = None
    ) -> web.Response:
        if self._current_state(key) is not None:
            shown_id = self._details_of(key).endpoint_id
            if _is_v2(request):
                code, detail = "PRIVATE_ENDPOINT_ALREADY_EXISTS", f"Private endpoint {shown_id}"
            else:
                code, detail = "INTERFACE_ENDPOINT_ALREADY_EXISTS", f"Interface endpoint {shown_id}"
            conflict = _AtlasError(
                HTTPStatus.CONFLICT, code, f"{detail} already exists.", [shown_id]
            )
            return conflict.response(request)
        step = self.scenario.step_seconds
        v2 = _is_v2(request)
        first_status, *later_statuses = _progression(key.cloud_provider, v2=v2)
        state = _EndpointState(
            exists=True, status=first_status, error_message=None, delete_requested=False
        )
        progression = [
            TimelineStep(after_seconds=step * number, status=status)
            for number, status in enumerate(later_statuses, start=1)
        ]
        now = self._clock()
        self._scripts[key] = _EndpointScript(state, now, progression)
        self._details[key] = (
            _EndpointDetails.derived(key.interface_endpoint_id) if details is None else details
        )
        self._ensure_service(key.service(), now)
        log.info("simulator_endpoint_created", **key._asdict())
        status = HTTPStatus.OK if v2 else HTTPStatus.CREATED  # as each version's spec says
        return _json_response(request, status, self._endpoint_body(request, key, state))

    def _delete(self, request: web.Request, key: EndpointKey) -> web.Response:
        current = self._current_state(key)
        if current is None:
            return _not_found(request).response(request)
        deleting = replace(current, status="DELETING", delete_requested=True)
        gone = TimelineStep(after_seconds=self.scenario.step_seconds, exists=False)
        self._scripts[key] = _EndpointScript(deleting, self._clock(), [gone])
        log.info("simulator_endpoint_delete_requested", **key._asdict())
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def _control_set_endpoint(self, request: web.Request) -> web.Response:
        try:
            key, endpoint_id = _control_key(request)
            update = _EndpointUpdate.model_validate_json(await request.read())
        except ValidationError as error:
            return _control_error(error)
        self.set_endpoint(
            key.group_id,
            key.private_link_id,
            endpoint_id,
            cloud_provider=key.cloud_provider,
            **update.model_dump(),
        )
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _control_remove_endpoint(self, request: web.Request) -> web.Response:
        try:
            key, endpoint_id = _control_key(request)
        except ValidationError as error:
            return _control_error(error)
        self.remove_endpoint(
            key.group_id, key.private_link_id, endpoint_id, cloud_provider=key.cloud_provider
        )
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        try:
            key, endpoint_id = _control_key(request)
            fault = Fault.model_validate_json(await request.read())
        except ValidationError as error:
            return _control_error(error)
        self.add_fault(
            key.group_id, key.private_link_id, endpoint_id, fault, cloud_provider=key.cloud_provider
        )
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _control_set_service(self, request: web.Request) -> web.Response:
        match = request.match_info
        try:
            key = _service_key(match["groupId"], match["cloudProvider"], match["serviceId"])
            update = _ServiceUpdate.model_validate_json(await request.read())
        except ValidationError as error:
            return _control_error(error)
        self.set_service(*key, **update.model_dump())
        return web.Response(status=HTTPStatus.NO_CONTENT)
