"""The Atlas client against aioresponses: classification, retries, backoff, POST safety."""

from __future__ import annotations

import asyncio
import errno
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from aioresponses import CallbackResult, aioresponses
from pydantic import SecretStr
from structlog.testing import capture_logs
from yarl import URL

from monitor import __version__
from monitor.atlas import (
    V2_MEDIA_TYPE,
    ApiKey,
    ApiVersion,
    AtlasAuthError,
    AtlasBadResponseError,
    AtlasClient,
    AtlasNotFoundError,
    AtlasRateLimitedError,
    AtlasRequestError,
    AtlasServerError,
    AtlasUnreachableError,
    EndpointRef,
    InterfaceEndpoint,
    LocalResourceError,
    ServiceAccount,
    parse_retry_after,
)
from monitor.atlas.http import MAX_BODY_BYTES
from monitor.providers import CloudProvider, ConnectionStatus, ServiceStatus
from monitor.simulator import Fault, Scenario, ScenarioEndpoint
from tests.helpers import (
    ENDPOINT_ID,
    GROUP_ID,
    PRIVATE_KEY,
    PRIVATE_LINK_ID,
    PUBLIC_KEY,
    FakeClock,
    RunVirtually,
    StartSimulator,
    unused_port,
)

BASE = "https://atlas.test"
REF = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, ENDPOINT_ID)
V1 = ApiVersion.V1
ENDPOINT_URL = f"{BASE}/api/atlas/v1.0{V1.endpoint_path(REF)}"
COLLECTION_URL = f"{BASE}/api/atlas/v1.0{V1.endpoints_path(REF)}"


def endpoint_body(status: str = "AVAILABLE", **fields: Any) -> dict[str, Any]:
    return {
        "interfaceEndpointId": ENDPOINT_ID,
        "connectionStatus": status,
        "errorMessage": None,
        "deleteRequested": False,
        **fields,
    }


def atlas_error(status: int, error_code: str | None = None, detail: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"error": status, "reason": "Reason", "detail": detail}
    if error_code:
        body["errorCode"] = error_code
    return body


class Sleeps:
    """Stands in for asyncio.sleep and remembers how long each backoff asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


MakeClient = Callable[..., AtlasClient]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(sleeps: Sleeps) -> Callable[..., AtlasClient]:
    def make(**overrides: Any) -> AtlasClient:
        options: dict[str, Any] = {
            "base_url": BASE,
            "login": ApiKey(PUBLIC_KEY, SecretStr(PRIVATE_KEY)),
            "timeout_seconds": 5,
            "max_retries": 3,
            "sleep": sleeps,
            "jitter": lambda: 1.0,
        }
        options.update(overrides)
        return AtlasClient(**options)

    return make


@pytest.fixture
def atlas(mocked_atlas: aioresponses) -> aioresponses:
    return mocked_atlas


ServeEndpoint = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def serve_endpoint() -> AsyncIterator[ServeEndpoint]:
    """A hand-written answer for REF's GET route on 127.0.0.1; returns the base URL."""
    servers: list[TestServer] = []

    async def serve(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get(f"/api/atlas/v1.0{V1.endpoint_path(REF)}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield serve
    for server in servers:
        await server.close()


def calls(mocked: aioresponses, method: str, url: str) -> int:
    return len(mocked.requests.get((method, URL(url)), []))


async def test_get_parses_an_endpoint(make_client: MakeClient, atlas: aioresponses) -> None:
    atlas.get(ENDPOINT_URL, payload=endpoint_body("REJECTED", errorMessage="subnet missing"))
    async with make_client() as client:
        endpoint = await client.get_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.REJECTED
    assert endpoint.error_message == "subnet missing"
    assert endpoint.delete_requested is False


async def test_unknown_status_survives_with_raw_value(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    atlas.get(ENDPOINT_URL, payload=endpoint_body("WAITING_FOR_USER"))
    async with make_client() as client:
        endpoint = await client.get_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.UNKNOWN
    assert endpoint.raw_status == "WAITING_FOR_USER"


@pytest.mark.parametrize(
    ("status", "body", "error_type", "error_code"),
    [
        (
            401,
            atlas_error(401, None, "You are not authorized for this resource."),
            AtlasAuthError,
            None,
        ),
        (
            403,
            atlas_error(403, "IP_ADDRESS_NOT_ON_ACCESS_LIST"),
            AtlasAuthError,
            "IP_ADDRESS_NOT_ON_ACCESS_LIST",
        ),
        (404, atlas_error(404, "RESOURCE_NOT_FOUND"), AtlasNotFoundError, "RESOURCE_NOT_FOUND"),
        (
            400,
            atlas_error(400, "PATH_PARAM_PARSE_ERROR"),
            AtlasRequestError,
            "PATH_PARAM_PARSE_ERROR",
        ),
        (409, atlas_error(409, "DUPLICATE"), AtlasRequestError, "DUPLICATE"),
    ],
)
async def test_client_errors_are_typed_and_not_retried(
    make_client: MakeClient,
    atlas: aioresponses,
    sleeps: Sleeps,
    status: int,
    body: dict[str, Any],
    error_type: type[Exception],
    error_code: str | None,
) -> None:
    atlas.get(ENDPOINT_URL, status=status, payload=body, repeat=True)
    async with make_client() as client:
        with pytest.raises(error_type) as caught:
            await client.get_interface_endpoint(REF)
    assert getattr(caught.value, "status", None) == status
    assert getattr(caught.value, "error_code", None) == error_code
    assert str(caught.value).startswith(f"GET {V1.endpoint_path(REF)}: {status}")
    assert calls(atlas, "GET", ENDPOINT_URL) == 1
    assert sleeps.delays == []


async def test_429_is_retried_after_retry_after(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.get(
        ENDPOINT_URL,
        status=429,
        payload=atlas_error(429, "RATE_LIMITED"),
        headers={"Retry-After": "7"},
    )
    atlas.get(ENDPOINT_URL, payload=endpoint_body())
    async with make_client(jitter=lambda: 0.0) as client:
        endpoint = await client.get_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.AVAILABLE
    assert sleeps.delays == [7.0]


async def test_backoff_grows_exponentially_with_full_jitter(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    for status in (500, 502, 503):
        atlas.get(ENDPOINT_URL, status=status, payload=atlas_error(status, "UNEXPECTED_ERROR"))
    atlas.get(ENDPOINT_URL, payload=endpoint_body())
    jitters = iter([1.0, 0.5, 0.25])
    async with make_client(jitter=lambda: next(jitters)) as client:
        await client.get_interface_endpoint(REF)
    # ceilings 0.5, 1, 2 seconds, each scaled by its jitter draw
    assert sleeps.delays == [0.5, 0.5, 0.5]
    assert calls(atlas, "GET", ENDPOINT_URL) == 4


async def test_retries_are_bounded_by_max_retries(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.get(
        ENDPOINT_URL,
        status=503,
        payload=atlas_error(503, "SERVICE_UNAVAILABLE"),
        headers={"Retry-After": "2"},
        repeat=True,
    )
    async with make_client(max_retries=2) as client:
        with pytest.raises(AtlasServerError) as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.retry_after == 2.0
    assert calls(atlas, "GET", ENDPOINT_URL) == 3
    assert sleeps.delays == [2.0, 2.0]


async def test_rate_limit_exhausted_keeps_retry_after(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.get(
        ENDPOINT_URL,
        status=429,
        payload=atlas_error(429, "RATE_LIMITED_TOKEN_BUCKET"),
        headers={"Retry-After": "1"},
        repeat=True,
    )
    async with make_client(max_retries=1) as client:
        with pytest.raises(AtlasRateLimitedError) as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.error_code == "RATE_LIMITED_TOKEN_BUCKET"
    assert caught.value.retry_after == 1.0
    assert calls(atlas, "GET", ENDPOINT_URL) == 2


async def test_retry_after_beyond_the_cap_is_not_waited_for(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.get(
        ENDPOINT_URL,
        status=429,
        payload=atlas_error(429, "RATE_LIMITED"),
        headers={"Retry-After": "3600"},
    )
    async with make_client() as client:
        with pytest.raises(AtlasRateLimitedError):
            await client.get_interface_endpoint(REF)
    assert sleeps.delays == []
    assert calls(atlas, "GET", ENDPOINT_URL) == 1


@pytest.mark.parametrize(
    "exception",
    [TimeoutError(), aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("reset")],
)
async def test_transport_failures_retry_then_report_unreachable(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps, exception: Exception
) -> None:
    atlas.get(ENDPOINT_URL, exception=exception, repeat=True)
    async with make_client(max_retries=2) as client:
        with pytest.raises(AtlasUnreachableError) as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.request_sent is True
    assert calls(atlas, "GET", ENDPOINT_URL) == 3
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"body": "{not json", "content_type": "application/json"}, "malformed JSON"),
        (
            {"body": "<html>hi</html>", "content_type": "text/html"},
            "expected JSON, got content type",
        ),
        ({"payload": ["a list"]}, "expected a JSON object, got list"),
        ({"payload": {"connectionStatus": "AVAILABLE"}}, "interfaceEndpointId is missing"),
        (
            {"payload": endpoint_body(connectionStatus=3)},
            "connectionStatus is missing or not a string",
        ),
        (
            {"payload": endpoint_body(errorMessage=["x"])},
            "errorMessage is neither null nor a string",
        ),
        ({"payload": endpoint_body(deleteRequested="no")}, "deleteRequested is not a boolean"),
        (
            {"payload": endpoint_body(interfaceEndpointId="vpce-11111111")},
            "not the endpoint asked for",
        ),
    ],
)
async def test_bad_answers_are_reported_not_trusted(
    make_client: MakeClient,
    atlas: aioresponses,
    sleeps: Sleeps,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    atlas.get(ENDPOINT_URL, **kwargs)
    async with make_client() as client:
        with pytest.raises(AtlasBadResponseError, match=re.escape(message)):
            await client.get_interface_endpoint(REF)
    assert sleeps.delays == []


async def test_the_error_code_header_names_an_error_whose_body_does_not(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    """v2 errors repeat their code in X-Error-Code; the body's code wins when both are there."""
    atlas.get(
        ENDPOINT_URL,
        status=404,
        body="<html>Not Found</html>",
        content_type="text/html",
        headers={"X-Error-Code": "RESOURCE_NOT_FOUND"},
    )
    atlas.get(
        ENDPOINT_URL,
        status=404,
        payload=atlas_error(404, "GROUP_NOT_FOUND"),
        headers={"X-Error-Code": "RESOURCE_NOT_FOUND"},
    )
    async with make_client(max_retries=0) as client:
        with pytest.raises(AtlasNotFoundError) as header_only:
            await client.get_interface_endpoint(REF)
        with pytest.raises(AtlasNotFoundError) as both:
            await client.get_interface_endpoint(REF)
    assert header_only.value.error_code == "RESOURCE_NOT_FOUND"
    assert both.value.error_code == "GROUP_NOT_FOUND"


async def test_error_detail_from_a_non_json_proxy_page_is_kept_short(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    atlas.get(
        ENDPOINT_URL,
        status=502,
        body="<html>" + "bad gateway " * 100,
        content_type="text/html",
        repeat=True,
    )
    async with make_client(max_retries=0) as client:
        with pytest.raises(AtlasServerError) as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.detail is not None
    assert len(caught.value.detail) <= 200


async def test_post_returns_the_new_endpoint(make_client: MakeClient, atlas: aioresponses) -> None:
    atlas.post(COLLECTION_URL, status=201, payload=endpoint_body("NONE"))
    async with make_client() as client:
        endpoint = await client.add_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.NONE
    (request,) = atlas.requests[("POST", URL(COLLECTION_URL))]
    assert json.loads(request.kwargs["data"]) == {"interfaceEndpointId": ENDPOINT_ID}
    assert request.kwargs["headers"]["Content-Type"] == "application/json"


async def test_post_that_timed_out_is_checked_with_get_not_repeated(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    atlas.post(COLLECTION_URL, exception=TimeoutError())
    atlas.get(ENDPOINT_URL, payload=endpoint_body("NONE"))
    async with make_client() as client:
        endpoint = await client.add_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.NONE
    assert calls(atlas, "POST", COLLECTION_URL) == 1
    assert calls(atlas, "GET", ENDPOINT_URL) == 1


async def test_post_of_unknown_outcome_not_found_by_get_fails_without_a_second_post(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.post(COLLECTION_URL, status=500, payload=atlas_error(500, "UNEXPECTED_ERROR"))
    atlas.get(ENDPOINT_URL, status=404, payload=atlas_error(404, "RESOURCE_NOT_FOUND"))
    atlas.post(COLLECTION_URL, status=201, payload=endpoint_body("NONE"))
    async with make_client() as client:
        with pytest.raises(AtlasServerError) as raised:
            await client.add_interface_endpoint(REF)
    assert raised.value.status == 500
    assert calls(atlas, "POST", COLLECTION_URL) == 1
    assert calls(atlas, "GET", ENDPOINT_URL) == 1
    assert sleeps.delays == []


async def test_post_throttled_is_retried_without_a_get(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.post(
        COLLECTION_URL,
        status=429,
        payload=atlas_error(429, "RATE_LIMITED"),
        headers={"Retry-After": "3"},
    )
    atlas.post(COLLECTION_URL, status=201, payload=endpoint_body("NONE"))
    async with make_client() as client:
        await client.add_interface_endpoint(REF)
    assert calls(atlas, "POST", COLLECTION_URL) == 2
    assert calls(atlas, "GET", ENDPOINT_URL) == 0
    assert sleeps.delays == [3.0]


async def test_post_rejected_by_atlas_is_not_retried(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.post(COLLECTION_URL, status=400, payload=atlas_error(400, "INVALID_ATTRIBUTE", "bad id"))
    async with make_client() as client:
        with pytest.raises(AtlasRequestError, match="INVALID_ATTRIBUTE: bad id"):
            await client.add_interface_endpoint(REF)
    assert calls(atlas, "POST", COLLECTION_URL) == 1
    assert sleeps.delays == []


async def test_post_that_timed_out_and_is_not_found_is_left_to_the_next_cycle(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.post(COLLECTION_URL, exception=TimeoutError(), repeat=True)
    atlas.get(ENDPOINT_URL, status=404, payload=atlas_error(404, "RESOURCE_NOT_FOUND"), repeat=True)
    async with make_client(max_retries=2) as client:
        with pytest.raises(AtlasUnreachableError):
            await client.add_interface_endpoint(REF)
    assert calls(atlas, "POST", COLLECTION_URL) == 1
    assert calls(atlas, "GET", ENDPOINT_URL) == 1


async def test_post_throttled_gives_up_after_max_retries(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    throttled = atlas_error(429, "RATE_LIMITED")
    atlas.post(
        COLLECTION_URL, status=429, payload=throttled, headers={"Retry-After": "0"}, repeat=True
    )
    async with make_client(max_retries=2) as client:
        with pytest.raises(AtlasRateLimitedError):
            await client.add_interface_endpoint(REF)
    assert calls(atlas, "POST", COLLECTION_URL) == 3
    assert calls(atlas, "GET", ENDPOINT_URL) == 0


async def test_delete_reports_whether_anything_was_deleted(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    atlas.delete(ENDPOINT_URL, status=204)
    atlas.delete(ENDPOINT_URL, status=404, payload=atlas_error(404, "RESOURCE_NOT_FOUND"))
    async with make_client() as client:
        assert await client.delete_interface_endpoint(REF) is True
        assert await client.delete_interface_endpoint(REF) is False


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_repr_never_shows_the_private_key(make_client: MakeClient) -> None:
    assert PRIVATE_KEY not in repr(make_client())


async def test_connection_refused_is_unreachable_and_never_sent(
    make_client: MakeClient, sleeps: Sleeps
) -> None:
    port = unused_port()
    async with make_client(base_url=f"http://127.0.0.1:{port}", max_retries=1) as client:
        with pytest.raises(AtlasUnreachableError, match="cannot connect") as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.request_sent is False
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize("number", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_a_request_this_host_could_not_make_is_a_local_error_not_atlas_unreachable(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps, number: int
) -> None:
    """Out of descriptors, a new connection's socket cannot be created: aiohttp raises an
    OSError with that errno, which says nothing about Atlas."""
    atlas.get(ENDPOINT_URL, exception=aiohttp.ClientOSError(number, "out of it"), repeat=True)
    async with make_client(max_retries=1) as client:
        with pytest.raises(LocalResourceError) as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.cause == errno.errorcode[number]
    assert caught.value.request_sent is False
    assert caught.value.summary.startswith("not sent, this host is out of resources: ")


async def test_a_failed_first_exchange_does_not_hold_up_the_others(
    make_client: MakeClient,
) -> None:
    port = unused_port()
    async with make_client(base_url=f"http://127.0.0.1:{port}", max_retries=0) as client:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(client.get_interface_endpoint(REF) for _ in range(3)), return_exceptions=True
            ),
            10,
        )
    assert [type(outcome) for outcome in outcomes] == [AtlasUnreachableError] * 3


async def test_an_unusable_digest_challenge_is_a_bad_answer_not_retried(
    make_client: MakeClient, serve_endpoint: ServeEndpoint, sleeps: Sleeps
) -> None:
    async def odd_challenge(request: web.Request) -> web.Response:
        challenge = 'Digest realm="MMS Public API", nonce="abc", algorithm=SHA-999, qop="auth"'
        return web.json_response(
            {"error": 401}, status=401, headers={"WWW-Authenticate": challenge}
        )

    async with make_client(base_url=await serve_endpoint(odd_challenge)) as client:
        with pytest.raises(AtlasBadResponseError, match="unusable Digest challenge"):
            await client.get_interface_endpoint(REF)
    assert sleeps.delays == []


async def test_timeout_applies_to_each_request(
    make_client: MakeClient, serve_endpoint: ServeEndpoint
) -> None:
    release = asyncio.Event()

    async def never_answers(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(endpoint_body())

    base = await serve_endpoint(never_answers)
    async with make_client(base_url=base, timeout_seconds=0.2, max_retries=0) as client:
        with pytest.raises(AtlasUnreachableError, match=r"no answer within 0.2 s"):
            await client.get_interface_endpoint(REF)
    release.set()


async def test_requests_identify_the_monitor_and_ask_for_json(
    make_client: MakeClient, serve_endpoint: ServeEndpoint
) -> None:
    seen: list[dict[str, str]] = []

    async def record_headers(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text=json.dumps(endpoint_body()), content_type="application/json")

    async with make_client(base_url=await serve_endpoint(record_headers)) as client:
        await client.get_interface_endpoint(REF)
    assert seen[0]["User-Agent"] == f"atlas-endpoint-monitor/{__version__}"
    assert seen[0]["Accept"] == "application/json"


async def test_oversized_answer_is_cut_off_not_buffered(
    make_client: MakeClient, serve_endpoint: ServeEndpoint
) -> None:
    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            await response.write(chunk)
        return response

    async with make_client(base_url=await serve_endpoint(flood)) as client:
        with pytest.raises(AtlasBadResponseError, match=f"larger than {MAX_BODY_BYTES} bytes"):
            await client.get_interface_endpoint(REF)


# Against the real simulator over a socket: Digest auth as Atlas does it.


def one_endpoint_scenario(**fields: Any) -> Scenario:
    return Scenario(
        endpoints=[
            ScenarioEndpoint(
                group_id=GROUP_ID,
                private_link_id=PRIVATE_LINK_ID,
                interface_endpoint_id=ENDPOINT_ID,
                **fields,
            )
        ]
    )


async def test_digest_handshake_happens_once_then_one_request_per_call(
    make_client: MakeClient, start_simulator: StartSimulator
) -> None:
    simulator, url = await start_simulator(one_endpoint_scenario())
    exchanges: list[tuple[str, str]] = []

    def observer(method: str, code: str, seconds: float) -> None:
        exchanges.append((method, code))

    async with make_client(base_url=url, observer=observer) as client:
        for _ in range(5):
            endpoint = await client.get_interface_endpoint(REF)
            assert endpoint.connection_status is ConnectionStatus.AVAILABLE
    assert simulator.stats.challenges == 1
    assert simulator.stats.total() == 6
    assert exchanges == [("GET", "401")] + [("GET", "200")] * 5


async def test_a_service_account_with_any_characters_logs_in_to_the_simulator(
    make_client: MakeClient, start_simulator: StartSimulator
) -> None:
    """Client and simulator agree on RFC 6749's form encoding of id and secret."""
    client_id, secret = "mdb_sa:id+1", "s+cr/t%2F:x y"
    simulator, url = await start_simulator(
        one_endpoint_scenario(), client_id=client_id, client_secret=secret
    )
    login = ServiceAccount(client_id, SecretStr(secret))
    async with make_client(base_url=url, login=login, api_version=V2) as client:
        endpoint = await client.get_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.AVAILABLE
    assert simulator.stats.token_requests == {200: 1}


async def test_wrong_private_key_is_an_auth_error_with_atlas_words(
    make_client: MakeClient, start_simulator: StartSimulator, sleeps: Sleeps
) -> None:
    simulator, url = await start_simulator(one_endpoint_scenario())
    async with make_client(
        base_url=url, login=ApiKey(PUBLIC_KEY, SecretStr("not-the-key"))
    ) as client:
        with pytest.raises(AtlasAuthError) as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.status == 401
    assert caught.value.error_code is None
    assert caught.value.detail == "You are not authorized for this resource."
    assert "not-the-key" not in str(caught.value)
    assert simulator.stats.requests[("GET", 401)] == 2
    assert sleeps.delays == []


async def test_add_then_watch_it_progress(
    make_client: MakeClient, start_simulator: StartSimulator
) -> None:
    clock = FakeClock(1000.0)
    simulator, url = await start_simulator(Scenario(step_seconds=10), clock=clock)
    async with make_client(base_url=url) as client:
        with pytest.raises(AtlasNotFoundError):
            await client.get_interface_endpoint(REF)
        added = await client.add_interface_endpoint(REF)
        assert added.connection_status is ConnectionStatus.NONE
        seen = []
        for _ in range(4):
            clock.now += 10
            seen.append((await client.get_interface_endpoint(REF)).connection_status)
        assert await client.delete_interface_endpoint(REF) is True
        assert (await client.get_interface_endpoint(REF)).delete_requested is True
        clock.now += 10
        assert await client.delete_interface_endpoint(REF) is False
    assert seen == [
        ConnectionStatus.PENDING_ACCEPTANCE,
        ConnectionStatus.PENDING,
        ConnectionStatus.AVAILABLE,
        ConnectionStatus.AVAILABLE,
    ]
    assert simulator.stats.by_endpoint[("POST", ENDPOINT_ID)] == 1


async def test_stale_nonce_costs_one_extra_round_trip(
    make_client: MakeClient, start_simulator: StartSimulator
) -> None:
    clock = FakeClock(0.0)
    simulator, url = await start_simulator(
        one_endpoint_scenario().model_copy(update={"nonce_lifetime_seconds": 60}),
        clock=clock,
    )
    async with make_client(base_url=url) as client:
        await client.get_interface_endpoint(REF)
        clock.now += 61
        await client.get_interface_endpoint(REF)
        await client.get_interface_endpoint(REF)
    assert simulator.stats.challenges == 2
    assert simulator.stats.requests[("GET", 200)] == 3


async def test_dropped_connections_are_retried_then_unreachable(
    make_client: MakeClient, start_simulator: StartSimulator, sleeps: Sleeps
) -> None:
    simulator, url = await start_simulator(
        one_endpoint_scenario(faults=[Fault(drop_connection=True)])
    )
    async with make_client(base_url=url, max_retries=2) as client:
        with pytest.raises(AtlasUnreachableError, match="connection failed") as caught:
            await client.get_interface_endpoint(REF)
    assert caught.value.request_sent is True
    assert len(sleeps.delays) == 2
    # aiohttp itself resends an idempotent request once on a dropped keep-alive connection
    assert simulator.stats.by_endpoint[("GET", ENDPOINT_ID)] == 6


async def test_scripted_429_then_recovery_honours_retry_after(
    make_client: MakeClient, start_simulator: StartSimulator, sleeps: Sleeps
) -> None:
    simulator, url = await start_simulator(
        one_endpoint_scenario(faults=[Fault(status=429, retry_after=4, times=2)])
    )
    async with make_client(base_url=url, jitter=lambda: 0.0) as client:
        endpoint = await client.get_interface_endpoint(REF)
    assert endpoint.connection_status is ConnectionStatus.AVAILABLE
    assert sleeps.delays == [4.0, 4.0]
    assert simulator.stats.requests[("GET", 429)] == 2


async def test_requests_queued_behind_the_first_exchange_wait_out_its_429(
    make_client: MakeClient, start_simulator: StartSimulator, sleeps: Sleeps
) -> None:
    """The first exchange runs alone; a 429 it gets pauses the project for the requests
    that were waiting for it too, instead of letting them all go out at once."""
    other = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, "vpce-0a1b2c3d4e5f60718")
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                ScenarioEndpoint(
                    group_id=GROUP_ID,
                    private_link_id=PRIVATE_LINK_ID,
                    interface_endpoint_id=ENDPOINT_ID,
                    faults=[Fault(status=429, retry_after=1, times=1)],
                ),
                ScenarioEndpoint(
                    group_id=GROUP_ID,
                    private_link_id=PRIVATE_LINK_ID,
                    interface_endpoint_id=other.interface_endpoint_id,
                ),
            ]
        )
    )
    async with make_client(base_url=url, jitter=lambda: 0.0) as client:
        await asyncio.wait_for(
            asyncio.gather(
                client.get_interface_endpoint(REF), client.get_interface_endpoint(other)
            ),
            10,
        )
    backoff, pause = sleeps.delays
    assert backoff == 1.0
    assert 0.5 < pause <= 1.0
    assert simulator.stats.by_endpoint == {
        ("GET", ENDPOINT_ID): 2,
        ("GET", other.interface_endpoint_id): 1,
    }


async def test_paced_requests_of_one_project_are_spaced_and_other_projects_are_not(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    other = EndpointRef("6a1f3c9e2b7d4f0a8c5e1d3b", PRIVATE_LINK_ID, ENDPOINT_ID)
    other_url = f"{BASE}/api/atlas/v1.0{V1.endpoint_path(other)}"
    atlas.get(ENDPOINT_URL, payload=endpoint_body(), repeat=True)
    atlas.get(other_url, payload=endpoint_body(), repeat=True)
    async with make_client(max_requests_per_minute=60) as client:
        for _ in range(3):
            await client.get_interface_endpoint(REF)
        await client.get_interface_endpoint(other)

    # A fake sleep lets no time pass, so each wait is the whole distance to its slot.
    assert [round(delay, 1) for delay in sleeps.delays] == [1.0, 2.0]
    assert calls(atlas, "GET", ENDPOINT_URL) == 3
    assert calls(atlas, "GET", other_url) == 1


def test_a_request_slot_is_taken_only_once_the_request_is_due(
    make_client: MakeClient, atlas: aioresponses, run_virtually: RunVirtually[None]
) -> None:
    """One request slot, one request a second per project, answers 0.5 s late: one
    project's GETs are due at 0, 1 and 2 s; another project's POST (add_missing) takes the
    slot while the first project's next GET is not due, and its GET keeps its own project's
    pace behind the POST."""
    other = EndpointRef("6a1f3c9e2b7d4f0a8c5e1d3b", PRIVATE_LINK_ID, ENDPOINT_ID)
    started: list[tuple[str, str, float]] = []
    in_flight = [0]

    def answer(method: str, ref: EndpointRef) -> Callable[..., Awaitable[CallbackResult]]:
        async def late(url: URL, **kwargs: Any) -> CallbackResult:
            started.append((method, ref.group_id, asyncio.get_running_loop().time() - 1000))
            in_flight[0] += 1
            assert in_flight[0] == 1
            await asyncio.sleep(0.5)
            in_flight[0] -= 1
            return CallbackResult(payload=endpoint_body())

        return late

    atlas.get(ENDPOINT_URL, callback=answer("GET", REF), repeat=True)
    atlas.post(f"{BASE}/api/atlas/v1.0{V1.endpoints_path(other)}", callback=answer("POST", other))
    atlas.get(f"{BASE}/api/atlas/v1.0{V1.endpoint_path(other)}", callback=answer("GET", other))

    async def requests() -> None:
        client = make_client(max_requests_per_minute=60, max_connections=1, sleep=asyncio.sleep)
        async with client:
            await asyncio.gather(
                *(client.get_interface_endpoint(REF) for _ in range(3)),
                client.add_interface_endpoint(other),
                client.get_interface_endpoint(other),
            )

    run_virtually(requests())  # VirtualTimeLoop's clock starts at 1000
    assert started == [
        ("GET", GROUP_ID, 0.0),  # the session's first exchange, alone
        ("POST", other.group_id, 0.5),
        ("GET", GROUP_ID, 1.0),
        ("GET", other.group_id, 1.5),
        ("GET", GROUP_ID, 2.0),
    ]


async def test_without_a_limit_nothing_is_paced(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    atlas.get(ENDPOINT_URL, payload=endpoint_body(), repeat=True)
    async with make_client(max_requests_per_minute=None) as client:
        for _ in range(3):
            await client.get_interface_endpoint(REF)

    assert sleeps.delays == []


# Atlas Administration API v2


V2 = ApiVersion.V2
AZURE_ID = (
    "/subscriptions/3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b/resourceGroups/payments-rg/"
    "providers/Microsoft.Network/privateEndpoints/payments-pe"
)
V2_ROOT = f"{BASE}/api/atlas/v2/groups/{GROUP_ID}/privateEndpoint"


def v2_endpoint_body(provider: CloudProvider, endpoint_id: str, status: str) -> dict[str, Any]:
    id_field, status_field = {
        CloudProvider.AWS: ("interfaceEndpointId", "connectionStatus"),
        CloudProvider.AZURE: ("privateEndpointResourceId", "status"),
        CloudProvider.GCP: ("endpointGroupName", "status"),
    }[provider]
    return {
        "cloudProvider": provider.value,
        id_field: endpoint_id,
        status_field: status,
        "errorMessage": None,
        "deleteRequested": False,
    }


def service_body(provider: CloudProvider, **fields: Any) -> dict[str, Any]:
    return {
        "id": PRIVATE_LINK_ID,
        "cloudProvider": provider.value,
        "regionName": "US_EAST_1",
        "status": "AVAILABLE",
        "errorMessage": None,
        **fields,
    }


def test_v2_paths_name_the_provider_and_keep_an_azure_id_in_one_segment() -> None:
    aws = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, ENDPOINT_ID)
    azure = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, AZURE_ID, CloudProvider.AZURE)

    assert V2.endpoint_path(aws) == (
        f"/groups/{GROUP_ID}/privateEndpoint/AWS/endpointService/{PRIVATE_LINK_ID}"
        f"/endpoint/{ENDPOINT_ID}"
    )
    azure_segment = V2.endpoint_path(azure).rsplit("/", 1)[-1]
    assert azure_segment.startswith("%2Fsubscriptions%2F")
    assert "/" not in azure_segment
    assert V1.endpoint_path(aws) == (
        f"/groups/{GROUP_ID}/privateEndpoint/{PRIVATE_LINK_ID}/interfaceEndpoints/{ENDPOINT_ID}"
    )


async def test_v2_asks_for_the_versioned_media_type_with_the_azure_id_encoded_on_the_wire(
    make_client: MakeClient,
) -> None:
    seen: list[tuple[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.headers["Accept"]))
        body = v2_endpoint_body(CloudProvider.AZURE, AZURE_ID, "AVAILABLE")
        return web.json_response(body, content_type="application/vnd.atlas.2023-01-01+json")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    azure = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, AZURE_ID, CloudProvider.AZURE)
    try:
        base_url = str(server.make_url("")).rstrip("/")
        async with make_client(base_url=base_url, api_version=V2) as client:
            endpoint = await client.get_interface_endpoint(azure)
    finally:
        await server.close()

    assert endpoint.connection_status is ConnectionStatus.AVAILABLE
    assert seen == [(f"/api/atlas/v2{V2.endpoint_path(azure)}", V2_MEDIA_TYPE)]
    assert "%2Fsubscriptions%2F" in seen[0][0]


@pytest.mark.parametrize(
    ("provider", "endpoint_id", "status", "expected"),
    [
        (CloudProvider.GCP, "analytics-psc", "VERIFIED", ConnectionStatus.VERIFIED),
        (CloudProvider.GCP, "analytics-psc", "REJECTED", ConnectionStatus.UNKNOWN),
        (CloudProvider.AZURE, AZURE_ID, "FAILED", ConnectionStatus.FAILED),
        (CloudProvider.AZURE, AZURE_ID, "PENDING", ConnectionStatus.UNKNOWN),
        (CloudProvider.AWS, ENDPOINT_ID, "INITIATING", ConnectionStatus.UNKNOWN),
    ],
)
def test_each_provider_reads_its_own_fields_and_statuses(
    provider: CloudProvider, endpoint_id: str, status: str, expected: ConnectionStatus
) -> None:
    endpoint = InterfaceEndpoint.from_json(
        v2_endpoint_body(provider, endpoint_id, status), provider
    )

    assert endpoint.interface_endpoint_id == endpoint_id
    assert endpoint.connection_status is expected
    assert endpoint.raw_status == status


def test_an_answer_about_another_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="cloudProvider is 'GCP', not AZURE"):
        InterfaceEndpoint.from_json(
            v2_endpoint_body(CloudProvider.GCP, "analytics-psc", "AVAILABLE"),
            CloudProvider.AZURE,
        )


async def test_an_azure_answer_may_spell_the_resource_id_in_another_case(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    azure = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, AZURE_ID, CloudProvider.AZURE)
    body = v2_endpoint_body(CloudProvider.AZURE, AZURE_ID.lower(), "AVAILABLE")
    atlas.get(re.compile(r".*/endpoint/%2F.*"), payload=body)
    async with make_client(api_version=V2) as client:
        endpoint = await client.get_interface_endpoint(azure)

    assert endpoint.connection_status is ConnectionStatus.AVAILABLE


@pytest.mark.parametrize("wrapped", [False, True])
async def test_listing_endpoint_services_reads_each_providers_endpoint_ids(
    make_client: MakeClient, atlas: aioresponses, wrapped: bool
) -> None:
    services = [
        service_body(CloudProvider.GCP, endpointGroupNames=["analytics-psc", "ml-psc"]),
        service_body(CloudProvider.GCP, id="65A1B2C3D4E5F60718293A5C", status="DELETING"),
    ]
    atlas.get(
        f"{V2_ROOT}/GCP/endpointService",
        payload={"results": services} if wrapped else services,
    )
    async with make_client(api_version=V2) as client:
        listed = await client.list_endpoint_services(GROUP_ID, CloudProvider.GCP)

    assert [service.endpoint_ids for service in listed] == [("analytics-psc", "ml-psc"), ()]
    assert listed[1].service_id == "65a1b2c3d4e5f60718293a5c"
    assert listed[1].status is ServiceStatus.DELETING


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"id": PRIVATE_LINK_ID}, "expected a JSON array of endpoint services"),
        ([{"id": "nope", "status": "AVAILABLE"}], "id is missing or not 24 hexadecimal"),
        ([service_body(CloudProvider.AWS, interfaceEndpoints="vpce-1")], "is not a list"),
        ([service_body(CloudProvider.AWS, status=None)], "status is missing"),
    ],
)
async def test_a_malformed_service_listing_is_a_bad_response(
    make_client: MakeClient, atlas: aioresponses, payload: object, expected: str
) -> None:
    atlas.get(f"{V2_ROOT}/AWS/endpointService", payload=payload)
    async with make_client(api_version=V2) as client:
        with pytest.raises(AtlasBadResponseError, match=expected):
            await client.list_endpoint_services(GROUP_ID, CloudProvider.AWS)


async def test_getting_an_endpoint_service_reads_status_region_and_message(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    atlas.get(
        f"{V2_ROOT}/AZURE/endpointService/{PRIVATE_LINK_ID}",
        payload=service_body(
            CloudProvider.AZURE,
            regionName="US_EAST_2",
            status="FAILED",
            errorMessage="subnet has network policies enabled",
            privateEndpoints=[AZURE_ID],
        ),
    )
    async with make_client(api_version=V2) as client:
        service = await client.get_endpoint_service(GROUP_ID, CloudProvider.AZURE, PRIVATE_LINK_ID)

    assert service.status is ServiceStatus.FAILED
    assert service.region == "US_EAST_2"
    assert service.error_message == "subnet has network policies enabled"
    assert service.endpoint_ids == (AZURE_ID,)


async def test_adding_on_v2_posts_the_aws_id_as_id(
    make_client: MakeClient, atlas: aioresponses
) -> None:
    url = f"{V2_ROOT}/AWS/endpointService/{PRIVATE_LINK_ID}/endpoint"
    answer = v2_endpoint_body(CloudProvider.AWS, ENDPOINT_ID, "PENDING_ACCEPTANCE")
    atlas.post(url, payload=answer)
    async with make_client(api_version=V2) as client:
        endpoint = await client.add_interface_endpoint(REF)

    assert endpoint.connection_status is ConnectionStatus.PENDING_ACCEPTANCE
    (request,) = atlas.requests[("POST", URL(url))]
    assert json.loads(request.kwargs["data"]) == {"id": ENDPOINT_ID}
    # The spec's request body is the versioned media type, as the SDK and the CLI send it.
    assert request.kwargs["headers"]["Content-Type"] == V2_MEDIA_TYPE


async def test_rate_limit_headers_running_low_slow_the_project_down_until_they_recover(
    make_client: MakeClient, atlas: aioresponses, sleeps: Sleeps
) -> None:
    low = {"RateLimit-Limit": "60", "RateLimit-Remaining": "5"}
    plenty = {"RateLimit-Limit": "60", "RateLimit-Remaining": "50"}
    atlas.get(ENDPOINT_URL, payload=endpoint_body(), headers=low)
    atlas.get(ENDPOINT_URL, payload=endpoint_body(), headers=low)
    atlas.get(ENDPOINT_URL, payload=endpoint_body(), headers=plenty)
    atlas.get(ENDPOINT_URL, payload=endpoint_body(), headers=plenty)
    async with make_client(max_requests_per_minute=None) as client:
        with capture_logs() as logs:
            for _ in range(4):
                await client.get_interface_endpoint(REF)

    # Unpaced by config: while the bucket is low, requests are spaced at its refill rate
    # (60 per minute: the third waits 1 s behind the second); once it recovers, none waits.
    assert [round(delay, 1) for delay in sleeps.delays] == [1.0]
    events = [entry["event"] for entry in logs]
    assert events.count("atlas_project_slowing_down") == 1
    assert events.count("atlas_project_rate_recovered") == 1
