"""The Atlas simulator over real sockets, driven by the same Digest client the monitor uses.

Time is a fake clock and latency a recording sleep, so nothing here waits for real.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
from base64 import b64encode
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
import yaml
import yarl
from multidict import CIMultiDictProxy
from pydantic import ValidationError

from monitor import simulator as simulator_module
from monitor.simulator import (
    API_ROOT,
    Fault,
    Scenario,
    ScenarioError,
    Simulator,
    default_scenario,
    load_scenario,
)
from monitor.simulator.auth import _NonceRegistry, _TokenRegistry
from tests.helpers import FakeClock, StartSimulator

PUBLIC_KEY = "sim-public"
PRIVATE_KEY = "sim-private-9c1e"
GROUP = "5e2211c17a3e5a48f5497de3"
LINK = "5e3a1b2c7a3e5a48f5497de4"
ENDPOINT = "vpce-0b9c5701325cb15dd"
OTHER_ENDPOINT = "vpce-0a1b2c3d4e5f60718"
OTHER_GROUP = "6a1f3c9e2b7d4f0a8c5e1d3b"
OTHER_LINK = "6a1f3c9e2b7d4f0a8c5e1d40"
RESOURCE_PATH = f"{API_ROOT}/groups/{GROUP}/privateEndpoint/{LINK}/interfaceEndpoints/{ENDPOINT}"
SIGNED_URI = f"{RESOURCE_PATH}?pretty=false"
CHALLENGE = re.compile(
    r'Digest realm="MMS Public API", domain="", nonce="(?P<nonce>[^"]+)", algorithm=MD5, '
    r'qop="auth", stale=(?P<stale>true|false)'
)
UNAUTHORIZED_TEXT = (
    '{"error":401,"reason":"Unauthorized","detail":"You are not authorized for this resource."}'
)


def endpoint(interface_endpoint_id: str = ENDPOINT, **fields: Any) -> dict[str, Any]:
    return {
        "group_id": GROUP,
        "private_link_id": LINK,
        "interface_endpoint_id": interface_endpoint_id,
        **fields,
    }


def scenario(*endpoints: dict[str, Any], **settings: Any) -> Scenario:
    return Scenario.model_validate({"endpoints": list(endpoints), **settings})


def atlas_body(
    status: str, *, interface_endpoint_id: str = ENDPOINT, **fields: Any
) -> dict[str, Any]:
    return {
        "interfaceEndpointId": interface_endpoint_id,
        "connectionStatus": status,
        "errorMessage": None,
        "deleteRequested": False,
        **fields,
    }


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def authorization(
    *,
    nonce: str,
    uri: str,
    method: str = "GET",
    username: str = PUBLIC_KEY,
    password: str = PRIVATE_KEY,
    realm: str = "MMS Public API",
    algorithm: str = "MD5",
    qop: str = "auth",
    scheme: str = "Digest",
    omit: tuple[str, ...] = (),
) -> str:
    """Computed here from RFC 7616, independently of the simulator's own code."""
    nc, cnonce = "00000001", "0a4f113b"
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    response = md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    fields = {
        "username": f'"{username}"',
        "realm": f'"{realm}"',
        "nonce": f'"{nonce}"',
        "uri": f'"{uri}"',
        "response": f'"{response}"',
        "algorithm": algorithm,
        "qop": qop,
        "nc": nc,
        "cnonce": f'"{cnonce}"',
    }
    return f"{scheme} " + ", ".join(f"{k}={v}" for k, v in fields.items() if k not in omit)


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class WireLog:
    """Client middleware below the Digest one: sees every response, retries included."""

    responses: list[tuple[int, str | None]] = field(default_factory=list)

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        response = await handler(request)
        self.responses.append((response.status, response.headers.get("WWW-Authenticate")))
        return response

    def statuses(self) -> list[int]:
        return [status for status, _ in self.responses]


@dataclass
class Answer:
    status: int
    text: str
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Harness:
    simulator: Simulator
    clock: FakeClock
    sleep: RecordingSleep
    base_url: str
    client: aiohttp.ClientSession
    """Authenticates like the monitor: aiohttp's DigestAuthMiddleware, preemptive."""
    raw: aiohttp.ClientSession
    """No authentication, for control routes and hand-made Authorization headers."""
    wire: WireLog

    def url(
        self,
        interface_endpoint_id: str | None = ENDPOINT,
        *,
        group_id: str = GROUP,
        private_link_id: str = LINK,
        query: str = "",
    ) -> str:
        """The resource URL, or the collection URL when interface_endpoint_id is None."""
        path = f"{API_ROOT}/groups/{group_id}/privateEndpoint/{private_link_id}/interfaceEndpoints"
        if interface_endpoint_id is not None:
            path += f"/{interface_endpoint_id}"
        return f"{self.base_url}{path}{query}"

    async def call(
        self,
        method: str,
        url: str | yarl.URL,
        *,
        session: aiohttp.ClientSession | None = None,
        **kwargs: Any,
    ) -> Answer:
        async with (session or self.client).request(method, url, **kwargs) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def get(self, interface_endpoint_id: str = ENDPOINT, **kwargs: Any) -> Answer:
        return await self.call("GET", self.url(interface_endpoint_id, **kwargs))

    async def post(self, body: object, **kwargs: Any) -> Answer:
        return await self.call("POST", self.url(None, **kwargs), json=body)


StartHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_harness(start_simulator: StartSimulator) -> AsyncIterator[StartHarness]:
    """The shared simulator fixture's simulator (a fake clock and a recording sleep) with
    clients; all torn down after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            served: Scenario | None = None,
            *,
            client_private_key: str = PRIVATE_KEY,
            client_id: str | None = None,
            client_secret: str | None = None,
        ) -> Harness:
            clock, sleep = FakeClock(), RecordingSleep()
            simulator, url = await start_simulator(
                served or scenario(endpoint()),
                public_key=PUBLIC_KEY,
                private_key=PRIVATE_KEY,
                clock=clock,
                sleep=sleep,
                client_id=client_id,
                client_secret=client_secret,
            )
            wire = WireLog()
            timeout = aiohttp.ClientTimeout(total=5)
            digest = aiohttp.DigestAuthMiddleware(PUBLIC_KEY, client_private_key, preemptive=True)
            client = aiohttp.ClientSession(middlewares=(digest, wire), timeout=timeout)
            stack.push_async_callback(client.close)
            raw = aiohttp.ClientSession(timeout=timeout)
            stack.push_async_callback(raw.close)
            return Harness(simulator, clock, sleep, url, client, raw, wire)

        yield start


async def test_bound_url_reports_the_real_port(start_harness: StartHarness) -> None:
    harness = await start_harness()
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", harness.base_url)
    assert match is not None
    assert int(match[1]) > 0


# Digest authentication


async def test_handshake_happens_once_then_one_request_per_call(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()

    answers = [await harness.get() for _ in range(5)]

    assert [answer.json() for answer in answers] == [atlas_body("AVAILABLE")] * 5
    assert harness.wire.statuses() == [401, 200, 200, 200, 200, 200]
    challenge = harness.wire.responses[0][1]
    assert challenge is not None
    match = CHALLENGE.fullmatch(challenge)
    assert match is not None
    assert match["stale"] == "false"
    stats = harness.simulator.stats
    assert stats.requests == Counter({("GET", 401): 1, ("GET", 200): 5})
    assert stats.total() == 6
    assert stats.challenges == 1
    assert stats.by_endpoint == Counter({("GET", ENDPOINT): 5})


async def test_wrong_private_key_gets_the_atlas_401_on_every_call(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(client_private_key="not-the-key")

    answers = [await harness.get() for _ in range(3)]

    for answer in answers:
        assert answer.status == 401
        assert answer.text == UNAUTHORIZED_TEXT
        assert answer.headers["Content-Type"] == "application/json"
        assert CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    stats = harness.simulator.stats
    assert stats.requests == Counter({("GET", 401): 6})
    assert stats.challenges == 6
    assert stats.by_endpoint == Counter()


async def test_stale_nonce_gets_stale_true_and_the_client_recovers(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(scenario(endpoint(), nonce_lifetime_seconds=300))
    await harness.get()

    harness.clock.advance(300)
    at_lifetime = await harness.get()
    harness.clock.advance(1)
    past_lifetime = await harness.get()
    after_reauth = await harness.get()

    assert [at_lifetime.status, past_lifetime.status, after_reauth.status] == [200, 200, 200]
    assert harness.wire.statuses() == [401, 200, 200, 401, 200, 200]
    stale_challenge = harness.wire.responses[3][1]
    assert stale_challenge is not None
    match = CHALLENGE.fullmatch(stale_challenge)
    assert match is not None
    assert match["stale"] == "true"
    assert harness.simulator.stats.challenges == 2


async def challenge_nonce(harness: Harness) -> str:
    """The first step of every Digest handshake: an unauthenticated request."""
    answer = await harness.call("GET", harness.base_url + SIGNED_URI, session=harness.raw)
    assert answer.status == 401
    match = CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    assert match is not None
    return match["nonce"]


async def test_a_hand_made_digest_is_accepted_repeatedly_whatever_its_nc(
    start_harness: StartHarness,
) -> None:
    """Proves the helper the rejection cases rely on, and that nc is not enforced."""
    harness = await start_harness()
    nonce = await challenge_nonce(harness)
    header = {"Authorization": authorization(nonce=nonce, uri=SIGNED_URI)}

    answers = [
        await harness.call(
            "GET", harness.base_url + SIGNED_URI, session=harness.raw, headers=header
        )
        for _ in range(2)
    ]

    assert [answer.status for answer in answers] == [200, 200]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"username": "someone-else"}, id="wrong username"),
        pytest.param({"password": "wrong-key"}, id="wrong response hash"),
        pytest.param({"uri": RESOURCE_PATH}, id="uri without the request's query"),
        pytest.param({"realm": "other realm"}, id="wrong realm"),
        pytest.param({"nonce": "0" * 32}, id="nonce never issued"),
        pytest.param({"algorithm": "SHA-256"}, id="unsupported algorithm"),
        pytest.param({"qop": "auth-int"}, id="unsupported qop"),
        pytest.param({"scheme": "Basic"}, id="not digest"),
        pytest.param({"omit": ("cnonce",)}, id="missing cnonce"),
    ],
)
async def test_invalid_digests_are_challenged_again(
    start_harness: StartHarness, overrides: dict[str, Any]
) -> None:
    harness = await start_harness()
    nonce = await challenge_nonce(harness)
    header = {"Authorization": authorization(**{"nonce": nonce, "uri": SIGNED_URI, **overrides})}

    answer = await harness.call(
        "GET", harness.base_url + SIGNED_URI, session=harness.raw, headers=header
    )

    assert answer.status == 401
    assert answer.text == UNAUTHORIZED_TEXT
    rechallenge = CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    assert rechallenge is not None
    assert rechallenge["stale"] == "false"
    assert rechallenge["nonce"] != nonce
    assert harness.simulator.stats.requests == Counter({("GET", 401): 2})
    assert harness.simulator.stats.challenges == 2


def test_nonce_registry_forgets_the_oldest_nonces_past_its_capacity() -> None:
    registry = _NonceRegistry(capacity=2)
    oldest, middle, newest = (registry.issue(now) for now in (1.0, 2.0, 3.0))

    assert registry.issued_at(oldest) is None
    assert (registry.issued_at(middle), registry.issued_at(newest)) == (2.0, 3.0)


# Paths, errors and output options


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"group_id": "5e2211c17a3e5a48f5497de"}, "groupId"),
        ({"group_id": "5e2211c17a3e5a48f5497dez"}, "groupId"),
        ({"private_link_id": "not-an-object-id"}, "privateLinkId"),
        ({"interface_endpoint_id": "vpce-0B9C5701325CB15DD"}, "interfaceEndpointId"),
        ({"interface_endpoint_id": "vpce-0b9c570132"}, "interfaceEndpointId"),
        ({"interface_endpoint_id": "eni-0b9c5701325cb15dd"}, "interfaceEndpointId"),
    ],
)
async def test_malformed_path_ids_are_path_param_parse_errors(
    start_harness: StartHarness, overrides: dict[str, str], parameter: str
) -> None:
    harness = await start_harness()

    answer = await harness.get(**overrides)

    assert answer.status == 400
    body = answer.json()
    assert body["error"] == 400
    assert body["errorCode"] == "PATH_PARAM_PARSE_ERROR"
    assert body["reason"] == "Bad Request"
    assert body["parameters"] == [parameter]
    assert parameter in body["detail"]


@pytest.mark.parametrize("interface_endpoint_id", [OTHER_ENDPOINT, "vpce-0123abcd"])
async def test_unknown_endpoint_is_an_atlas_404(
    start_harness: StartHarness, interface_endpoint_id: str
) -> None:
    harness = await start_harness()

    answer = await harness.get(interface_endpoint_id)

    assert answer.status == 404
    assert answer.headers["Content-Type"] == "application/json"
    path = harness.url(interface_endpoint_id).removeprefix(harness.base_url)
    assert answer.json() == {
        "error": 404,
        "errorCode": "RESOURCE_NOT_FOUND",
        "detail": f"Cannot find resource {path}.",
        "reason": "Not Found",
        "parameters": [path],
    }


async def test_envelope_wraps_the_body_and_keeps_the_http_status(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()

    found = await harness.get(query="?envelope=true")
    missing = await harness.get(OTHER_ENDPOINT, query="?envelope=true")

    assert found.status == 200
    assert found.json() == {"status": 200, "content": atlas_body("AVAILABLE")}
    assert missing.status == 404
    assert missing.json()["status"] == 404
    assert missing.json()["content"]["errorCode"] == "RESOURCE_NOT_FOUND"


async def test_pretty_indents_and_the_default_is_compact(start_harness: StartHarness) -> None:
    harness = await start_harness()

    pretty = await harness.get(query="?pretty=true")
    compact = await harness.get()

    assert pretty.text == json.dumps(atlas_body("AVAILABLE"), indent=2)
    assert compact.text == json.dumps(atlas_body("AVAILABLE"), separators=(",", ":"))


# Adding and deleting


async def test_post_creates_an_endpoint_that_progresses_to_available(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(scenario(endpoint(exists=False), step_seconds=10))
    assert (await harness.get()).status == 404

    created = await harness.post({"interfaceEndpointId": ENDPOINT})
    observed = []
    for seconds in (9.9, 0.1, 10, 10, 1000):
        harness.clock.advance(seconds)
        observed.append((await harness.get()).json()["connectionStatus"])

    assert created.status == 201
    assert created.json() == atlas_body("NONE")
    assert observed == ["NONE", "PENDING_ACCEPTANCE", "PENDING", "AVAILABLE", "AVAILABLE"]
    assert harness.simulator.stats.by_endpoint[("POST", ENDPOINT)] == 1


async def test_post_of_an_existing_endpoint_conflicts(start_harness: StartHarness) -> None:
    harness = await start_harness()

    answer = await harness.post({"interfaceEndpointId": ENDPOINT})

    assert answer.status == 409
    assert answer.json()["errorCode"] == "INTERFACE_ENDPOINT_ALREADY_EXISTS"
    assert harness.simulator.endpoint_state(GROUP, LINK, ENDPOINT) == atlas_body("AVAILABLE")


@pytest.mark.parametrize(
    ("body", "error_code", "parameters"),
    [
        (b'{"interfaceEndpointId": ', "INVALID_JSON", []),
        (b"[]", "INVALID_JSON", []),
        (b"{}", "MISSING_ATTRIBUTE", ["interfaceEndpointId"]),
        (b'{"interfaceEndpointId": 7}', "INVALID_ATTRIBUTE", ["interfaceEndpointId"]),
        (b'{"interfaceEndpointId": "vpce-xyz"}', "INVALID_ATTRIBUTE", ["interfaceEndpointId"]),
        (b'{"interfaceEndpointId": "vpce-0a1b2c3d4e5f60718", "x": 1}', "INVALID_ATTRIBUTE", ["x"]),
    ],
)
async def test_post_rejects_bad_bodies(
    start_harness: StartHarness, body: bytes, error_code: str, parameters: list[str]
) -> None:
    harness = await start_harness()

    answer = await harness.call(
        "POST", harness.url(None), data=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status == 400
    assert answer.json()["errorCode"] == error_code
    assert answer.json()["parameters"] == parameters
    assert harness.simulator.endpoint_state(GROUP, LINK, OTHER_ENDPOINT) is None


async def test_delete_shows_deleting_for_one_step_then_the_endpoint_is_gone(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(scenario(endpoint(status="REJECTED"), step_seconds=10))

    deleted = await harness.call("DELETE", harness.url())
    during = await harness.get()
    harness.clock.advance(10)
    after = await harness.get()
    deleted_again = await harness.call("DELETE", harness.url())
    re_added = await harness.post({"interfaceEndpointId": ENDPOINT})

    assert (deleted.status, deleted.text) == (204, "")
    assert during.json() == atlas_body("DELETING", deleteRequested=True)
    assert after.status == 404
    assert deleted_again.status == 404
    assert re_added.status == 201


# Faults


async def test_status_fault_with_retry_after_is_used_up_then_answers_normally(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, Fault(status=503, retry_after=7, times=1))

    faulted = await harness.get()
    normal = await harness.get()

    assert faulted.status == 503
    assert faulted.headers["Retry-After"] == "7"
    assert faulted.json()["errorCode"] == "UNEXPECTED_ERROR"
    assert faulted.json()["reason"] == "Service Unavailable"
    assert normal.status == 200
    assert "Retry-After" not in normal.headers


@pytest.mark.parametrize(
    ("fault", "error_code"),
    [
        (Fault(status=429), "RATE_LIMITED"),
        (Fault(status=429, error_code="RATE_LIMITED_TOKEN_BUCKET"), "RATE_LIMITED_TOKEN_BUCKET"),
        (Fault(status=404), "RESOURCE_NOT_FOUND"),
        (Fault(status=403), "IP_ADDRESS_NOT_ON_ACCESS_LIST"),
        (Fault(status=500), "UNEXPECTED_ERROR"),
        (Fault(status=409), "CONFLICT"),
    ],
)
async def test_status_faults_carry_sensible_error_codes(
    start_harness: StartHarness, fault: Fault, error_code: str
) -> None:
    harness = await start_harness()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, fault)

    answer = await harness.get()

    assert answer.status == fault.status
    assert answer.json()["error"] == fault.status
    assert answer.json()["errorCode"] == error_code


async def test_first_matching_fault_with_uses_left_applies(
    start_harness: StartHarness,
) -> None:
    faults = [
        {"methods": ["DELETE"], "status": 409},
        {"times": 1},
        {"status": 500, "times": 2},
        {"status": 502},
    ]
    harness = await start_harness(scenario(endpoint(faults=faults)))

    statuses = [(await harness.get()).status for _ in range(5)]
    delete = await harness.call("DELETE", harness.url())

    assert statuses == [200, 500, 500, 502, 502]
    assert delete.status == 409
    assert harness.simulator.endpoint_state(GROUP, LINK, ENDPOINT) == atlas_body("AVAILABLE")


async def test_dropped_get_reaches_the_client_as_a_disconnect(
    start_harness: StartHarness,
) -> None:
    """aiohttp resends an idempotent request once, so two drops are needed to surface."""
    harness = await start_harness()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, Fault(drop_connection=True, times=2))

    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await harness.get()
    recovered = await harness.get()

    assert recovered.status == 200
    assert harness.simulator.stats.requests[("GET", 0)] == 2


async def test_dropped_post_reaches_the_client_and_adds_nothing(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(scenario(endpoint(exists=False)))
    drop = Fault(methods=["POST"], drop_connection=True, times=1)
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, drop)

    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await harness.post({"interfaceEndpointId": ENDPOINT})

    assert harness.simulator.endpoint_state(GROUP, LINK, ENDPOINT) is None
    assert harness.simulator.stats.requests[("POST", 0)] == 1


async def test_truncated_body_reaches_the_client_as_a_payload_error(
    start_harness: StartHarness,
) -> None:
    """Headers with the whole Content-Length, half the body, then the connection closes."""
    harness = await start_harness()
    full = json.dumps(atlas_body("AVAILABLE"), separators=(",", ":")).encode()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, Fault(truncate_body=True, times=1))

    async with harness.client.get(harness.url()) as response:
        status, length = response.status, response.content_length
        received = await response.content.read(len(full) // 2)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    recovered = await harness.get()

    assert (status, length) == (200, len(full))
    assert received == full[: len(full) // 2]
    assert recovered.json() == atlas_body("AVAILABLE")
    # Its status line went out, so it counts as a 200, unlike a dropped connection.
    assert harness.simulator.stats.requests == Counter({("GET", 401): 1, ("GET", 200): 2})
    assert harness.simulator.stats.by_endpoint[("GET", ENDPOINT)] == 2


async def test_truncation_applies_to_a_scripted_answer_too(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()
    faulted = Fault(status=503, retry_after=2, truncate_body=True, times=1)
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, faulted)

    async with harness.client.get(harness.url()) as response:
        status, retry_after = response.status, response.headers["Retry-After"]
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

    assert (status, retry_after) == (503, "2")
    assert harness.simulator.stats.requests[("GET", 503)] == 1


@pytest.mark.parametrize(
    ("fault", "status", "content_type"),
    [
        (Fault(body='{"interfaceEndpointId": '), 200, "application/json"),
        (
            Fault(body="<html>Bad gateway</html>", status=502, content_type="text/html"),
            502,
            "text/html",
        ),
    ],
)
async def test_raw_body_fault_is_sent_verbatim(
    start_harness: StartHarness, fault: Fault, status: int, content_type: str
) -> None:
    harness = await start_harness()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, fault)

    answer = await harness.get()

    assert (answer.status, answer.text) == (status, fault.body)
    assert answer.headers["Content-Type"] == content_type


async def test_latency_fault_waits_with_the_injected_sleep_then_answers(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()
    slow_get = Fault(methods=["GET"], latency_seconds=0.2, retry_after=3)
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, slow_get)

    answers = [await harness.get() for _ in range(2)]
    deleted = await harness.call("DELETE", harness.url())

    assert [answer.json() for answer in answers] == [atlas_body("AVAILABLE")] * 2
    assert [answer.headers["Retry-After"] for answer in answers] == ["3", "3"]
    assert harness.sleep.delays == [0.2, 0.2]
    assert deleted.status == 204


async def test_post_faults_are_keyed_by_the_id_in_the_body(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()
    harness.simulator.add_fault(GROUP, LINK, OTHER_ENDPOINT, Fault(status=500, times=1))

    first = await harness.post({"interfaceEndpointId": OTHER_ENDPOINT})
    second = await harness.post({"interfaceEndpointId": OTHER_ENDPOINT})

    assert (first.status, second.status) == (500, 201)
    assert harness.simulator.stats.by_endpoint[("POST", OTHER_ENDPOINT)] == 2


# Timelines and explicit changes


async def test_timeline_steps_change_only_the_fields_they_name(
    start_harness: StartHarness,
) -> None:
    timeline = [
        {"after_seconds": 120, "status": "AVAILABLE", "error_message": None},
        {"after_seconds": 60, "status": "PENDING"},
        {"after_seconds": 180, "exists": False},
    ]
    scripted = endpoint(status="PENDING_ACCEPTANCE", error_message="no subnet", timeline=timeline)
    harness = await start_harness(scenario(scripted))

    observed = []
    for seconds in (0, 59, 1, 60, 60):
        harness.clock.advance(seconds)
        answer = await harness.get()
        observed.append(answer.json() if answer.status == 200 else answer.status)

    assert observed == [
        atlas_body("PENDING_ACCEPTANCE", errorMessage="no subnet"),
        atlas_body("PENDING_ACCEPTANCE", errorMessage="no subnet"),
        atlas_body("PENDING", errorMessage="no subnet"),
        atlas_body("AVAILABLE"),
        404,
    ]


async def test_explicit_changes_override_the_timeline(start_harness: StartHarness) -> None:
    timeline = [{"after_seconds": 60, "status": "AVAILABLE"}]
    harness = await start_harness(scenario(endpoint(status="PENDING", timeline=timeline)))
    simulator = harness.simulator

    simulator.set_endpoint(GROUP, LINK, ENDPOINT, error_message="subnet missing")
    harness.clock.advance(100)
    kept_status = simulator.endpoint_state(GROUP, LINK, ENDPOINT)
    simulator.set_endpoint(GROUP, LINK, OTHER_ENDPOINT)
    new_endpoint = simulator.endpoint_state(GROUP, LINK, OTHER_ENDPOINT)
    simulator.remove_endpoint(GROUP, LINK, ENDPOINT)

    assert kept_status == atlas_body("PENDING", errorMessage="subnet missing")
    # A status both versions have: v2 has no NONE.
    assert new_endpoint == atlas_body("PENDING_ACCEPTANCE", interface_endpoint_id=OTHER_ENDPOINT)
    assert (await harness.get()).status == 404


def test_steering_methods_reject_malformed_ids() -> None:
    simulator = Simulator(scenario(), public_key=PUBLIC_KEY, private_key=PRIVATE_KEY)

    with pytest.raises(ValueError, match="interface_endpoint_id"):
        simulator.set_endpoint(GROUP, LINK, "vpce-XYZ", status="AVAILABLE")


# Rate limiting


async def test_rate_limit_per_group_with_headers_429_and_continuous_refill(
    start_harness: StartHarness,
) -> None:
    served = scenario(
        endpoint(),
        endpoint(group_id=OTHER_GROUP, private_link_id=OTHER_LINK),
        rate_limit_per_minute=2,
    )
    harness = await start_harness(served)

    allowed = [await harness.get() for _ in range(2)]
    limited = await harness.get()
    other_group = await harness.get(group_id=OTHER_GROUP, private_link_id=OTHER_LINK)
    harness.clock.advance(30)
    refilled = await harness.get()

    assert [answer.headers["RateLimit-Remaining"] for answer in allowed] == ["1", "0"]
    assert all(answer.headers["RateLimit-Limit"] == "2" for answer in allowed)
    assert limited.status == 429
    assert limited.json()["errorCode"] == "RATE_LIMITED"
    assert limited.headers["Retry-After"] == "30"
    assert (other_group.status, other_group.headers["RateLimit-Remaining"]) == (200, "1")
    assert (refilled.status, refilled.headers["RateLimit-Remaining"]) == (200, "0")


async def test_no_rate_limit_headers_without_a_limit(start_harness: StartHarness) -> None:
    harness = await start_harness()

    answer = await harness.get()

    assert answer.status == 200
    assert "RateLimit-Limit" not in answer.headers
    assert "RateLimit-Remaining" not in answer.headers


# Control routes


async def test_control_routes_steer_the_simulator_without_being_counted(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness()
    control = f"{harness.base_url}/_simulator/endpoints/{GROUP}/{LINK}/{ENDPOINT}"

    set_answer = await harness.call(
        "PUT", control, session=harness.raw, json={"status": "REJECTED", "error_message": "boom"}
    )
    rejected = await harness.get()
    fault_answer = await harness.call(
        "POST", f"{control}/faults", session=harness.raw, json={"status": 503, "times": 1}
    )
    faulted = await harness.get()
    remove_answer = await harness.call("DELETE", control, session=harness.raw)
    removed = await harness.get()
    stats = await harness.call("GET", f"{harness.base_url}/_simulator/stats", session=harness.raw)

    assert [set_answer.status, fault_answer.status, remove_answer.status] == [204, 204, 204]
    assert rejected.json() == atlas_body("REJECTED", errorMessage="boom")
    assert faulted.status == 503
    assert removed.status == 404
    assert stats.json() == {
        "total": 4,
        "challenges": 1,
        "requests": {"GET": {"401": 1, "200": 1, "503": 1, "404": 1}},
        "by_endpoint": {"GET": {ENDPOINT: 3}},
        "token_requests": {},
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        (
            "POST",
            f"{GROUP}/{LINK}/{ENDPOINT}/faults",
            {"drop_connection": True, "body": "x"},
            "drop_connection",
        ),
        ("POST", f"{GROUP}/{LINK}/{ENDPOINT}/faults", {"status": 503, "times": 0}, "times: "),
        ("PUT", f"{GROUP}/{LINK}/{ENDPOINT}", {"bogus": 1}, "bogus: Extra inputs"),
        ("PUT", f"{GROUP}/{LINK}/vpce-XYZ", {}, "interface_endpoint_id: must be"),
        ("DELETE", f"{GROUP}/short/{ENDPOINT}", None, "private_link_id: must be"),
    ],
)
async def test_control_routes_reject_invalid_input_with_the_field_path(
    start_harness: StartHarness, method: str, path: str, body: object, problem: str
) -> None:
    harness = await start_harness()
    url = f"{harness.base_url}/_simulator/endpoints/{path}"

    answer = await harness.call(method, url, session=harness.raw, json=body)

    assert answer.status == 400
    assert problem in answer.json()["detail"]
    assert harness.simulator.endpoint_state(GROUP, LINK, ENDPOINT) == atlas_body("AVAILABLE")


# Scenario files


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


def test_load_scenario_reports_every_problem_with_its_field_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "scenario.yaml",
        f"""
step_seconds: 0
colour: blue
endpoints:
  - group_id: "{GROUP}"
    private_link_id: "{LINK}"
    interface_endpoint_id: vpce-NOPE
    timeline:
      - after_seconds: 5
        status: null
    faults:
      - drop_connection: true
        body: "{{"
      - status: 204
      - status: 418
        error_code: TEAPOT
      - methods: [PATCH]
""",
    )

    with pytest.raises(ScenarioError) as raised:
        load_scenario(path)

    locations = [problem.partition(": ")[0] for problem in raised.value.problems]
    assert locations == [
        "step_seconds",
        "endpoints.0.interface_endpoint_id",
        "endpoints.0.timeline.0",
        "endpoints.0.faults.0",
        "endpoints.0.faults.1",
        "endpoints.0.faults.3.methods.0",
        "colour",
    ]
    assert str(raised.value) == "\n".join(raised.value.problems)
    assert "drop_connection sends no answer" in raised.value.problems[3]
    assert "below 400 needs a raw body" in raised.value.problems[4]


def test_duplicate_endpoints_are_a_scenario_error(tmp_path: Path) -> None:
    document = {"endpoints": [endpoint(), endpoint(status="REJECTED")]}
    path = write(tmp_path / "scenario.json", json.dumps(document))

    with pytest.raises(ScenarioError, match=r"^endpoints: entry 1 repeats entry 0 \("):
        load_scenario(path)


def test_load_scenario_reads_json(tmp_path: Path) -> None:
    document = {"step_seconds": 2.5, "endpoints": [endpoint(status="PENDING")]}
    path = write(tmp_path / "scenario.json", json.dumps(document))

    loaded = load_scenario(str(path))

    assert loaded.step_seconds == 2.5
    assert [entry.status for entry in loaded.endpoints] == ["PENDING"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read scenario file: No such file or directory"),
        ("endpoints: [\n", "not valid YAML or JSON"),
        ("", "a scenario must be a mapping, this one is empty"),
        ("- 1\n", "a scenario must be a mapping, this one is a list"),
    ],
)
def test_unusable_scenario_files_are_named_in_the_error(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "scenario.yaml"
    if content is not None:
        write(path, content)

    with pytest.raises(ScenarioError) as raised:
        load_scenario(path)

    assert str(raised.value).startswith(f"{path}: ")
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"drop_connection": True, "retry_after": 1}, "cannot be combined with retry_after"),
        ({"drop_connection": True, "truncate_body": True}, "cannot be combined with truncate"),
        ({"content_type": "text/plain"}, "content_type only applies to a raw body"),
        ({"error_code": "X"}, "error_code needs a status"),
        ({"body": "x", "status": 500, "error_code": "X"}, "cannot be combined with a raw body"),
        ({"status": 520}, "520 is not a standard HTTP status code"),
        ({"methods": []}, "at least 1 item"),
    ],
)
def test_fault_rejects_meaningless_combinations(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Fault.model_validate(fields)


def test_timeline_step_must_change_something_and_only_error_message_may_be_null() -> None:
    with pytest.raises(ValidationError, match="must change at least one"):
        Scenario.model_validate({"endpoints": [endpoint(timeline=[{"after_seconds": 1}])]})
    with pytest.raises(ValidationError, match="exists cannot be null"):
        Scenario.model_validate(
            {"endpoints": [endpoint(timeline=[{"after_seconds": 1, "exists": None}])]}
        )


# The packaged demo scenario

LEDGER = ("6a1f3c9e2b7d4f0a8c5e1d3b", "6a1f3c9e2b7d4f0a8c5e1d40", "vpce-1a2b3c4d5e6f7a8b9")


def test_default_scenario_holds_the_seven_demo_endpoints() -> None:
    demo = default_scenario()

    summary = {
        entry.interface_endpoint_id: (entry.exists, entry.status)
        for entry in demo.endpoints
        if entry.cloud_provider == "AWS"
    }
    assert demo.step_seconds == 10
    assert summary == {
        "vpce-0b9c5701325cb15dd": (True, "AVAILABLE"),
        "vpce-0a1b2c3d4e5f60718": (True, "REJECTED"),
        "vpce-0c2d4e6f8a0b1c3d5": (True, "AVAILABLE"),
        "vpce-0d3e5f7a9b1c2d4e6": (True, "PENDING_ACCEPTANCE"),
        "vpce-0e4f6a8b0c2d3e5f7": (False, "AVAILABLE"),
        "vpce-0f5a7b9c1d3e4f6a8": (True, "AVAILABLE"),
        "vpce-1a2b3c4d5e6f7a8b9": (True, "AVAILABLE"),
    }
    analytics = demo.endpoints[2]
    assert analytics.error_message == (
        "Interface endpoint vpce-0c2d4e6f8a0b1c3d5 has no subnet in availability zone "
        "use1-az3 used by the cluster"
    )


async def test_default_scenario_served_behaves_as_the_demo_needs(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(default_scenario())

    batch = [await harness.get("vpce-0f5a7b9c1d3e4f6a8") for _ in range(3)]
    search = await harness.get("vpce-0e4f6a8b0c2d3e5f7")
    ledger = await harness.get(LEDGER[2], group_id=LEDGER[0], private_link_id=LEDGER[1])
    reports = []
    for seconds in (0, 60, 60):
        harness.clock.advance(seconds)
        reports.append((await harness.get("vpce-0d3e5f7a9b1c2d4e6")).json()["connectionStatus"])

    assert [answer.status for answer in batch] == [503, 429, 200]
    assert batch[1].headers["Retry-After"] == "1"
    assert search.status == 404
    assert ledger.status == 200
    assert harness.sleep.delays == [0.2]
    assert reports == ["PENDING_ACCEPTANCE", "PENDING", "AVAILABLE"]


def test_the_documented_scenario_example_is_valid() -> None:
    """Keeps the format reference in the module docstring honest."""
    example = simulator_module.__doc__.partition("::")[2].partition("\nUnauthenticated")[0]

    documented = Scenario.model_validate(yaml.safe_load(example))

    assert [fault.times for fault in documented.endpoints[0].faults] == [1, 1, 2, None, 1]


# Atlas v2: endpoint services and private endpoints of AWS, Azure and GCP

V2_ROOT = "/api/atlas/v2"
V2_ACCEPT = {"Accept": "application/vnd.atlas.2023-01-01+json"}
V2_CONTENT_TYPE = "application/vnd.atlas.2023-01-01+json;charset=utf-8"
AZURE_SERVICE = "65a1b2c3d4e5f60718293a4b"
GCP_SERVICE = "65a1b2c3d4e5f60718293a5c"
AZURE_ID = (
    "/subscriptions/3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b/resourceGroups/payments-rg"
    "/providers/Microsoft.Network/privateEndpoints/payments-pe"
)
NEW_AZURE_ID = AZURE_ID.replace("payments", "orders")
GCP_NAME = "analytics-psc"
NEW_AWS = "vpce-0e4f6a8b0c2d3e5f7"
CLIENT_ID = "mdb_sa_id_0123456789abcdef01234567"
CLIENT_SECRET = "mdb_sa_sk_not-a-real-secret-4f1e"
SERVICE_OF = {"AWS": LINK, "AZURE": AZURE_SERVICE, "GCP": GCP_SERVICE}
EXISTING_OF = {"AWS": ENDPOINT, "AZURE": AZURE_ID, "GCP": GCP_NAME}
NEW_OF = {"AWS": NEW_AWS, "AZURE": NEW_AZURE_ID, "GCP": "ml-psc"}
POST_BODY_OF: dict[str, dict[str, Any]] = {
    "AWS": {"id": NEW_AWS},
    "AZURE": {"id": NEW_AZURE_ID, "privateEndpointIPAddress": "10.0.0.4"},
    "GCP": {
        "endpointGroupName": "ml-psc",
        "endpoints": [{"endpointName": "ml-psc-0", "ipAddress": "10.0.0.5"}],
        "gcpProjectId": "p-fdeeb3e43b8e733e5ab627b1",  # the spec's example
    },
}
GCP_PROJECT = {"gcpProjectId": "analytics-prod-4711"}  # a Google Cloud project id
PROGRESSION_OF = {
    "AWS": ["PENDING_ACCEPTANCE", "PENDING", "AVAILABLE"],  # v2's enum has no NONE
    "AZURE": ["INITIATING", "AVAILABLE"],
    "GCP": ["INITIATING", "VERIFIED", "AVAILABLE"],
}
STATUS_FIELD_OF = {"AWS": "connectionStatus", "AZURE": "status", "GCP": "status"}
PROVIDERS = ["AWS", "AZURE", "GCP"]


def provider_endpoint(
    cloud_provider: str, endpoint_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    return endpoint(
        EXISTING_OF[cloud_provider] if endpoint_id is None else endpoint_id,
        private_link_id=SERVICE_OF[cloud_provider],
        cloud_provider=cloud_provider,
        **fields,
    )


def service(cloud_provider: str, **fields: Any) -> dict[str, Any]:
    return {
        "group_id": GROUP,
        "id": SERVICE_OF[cloud_provider],
        "cloud_provider": cloud_provider,
        **fields,
    }


def every_provider(**settings: Any) -> Scenario:
    return scenario(*(provider_endpoint(provider) for provider in PROVIDERS), **settings)


def v2_url(
    harness: Harness,
    cloud_provider: str,
    service_id: str | None = None,
    *,
    endpoint_id: str | None = None,
    collection: bool = False,
    group_id: str = GROUP,
    query: str = "",
) -> yarl.URL:
    """Built like the monitor's client does: the id quoted with safe="", sent as is."""
    path = f"{V2_ROOT}/groups/{group_id}/privateEndpoint/{cloud_provider}/endpointService"
    if service_id is not None:
        path += f"/{service_id}"
    if collection or endpoint_id is not None:
        path += "/endpoint"
    if endpoint_id is not None:
        path += "/" + quote(endpoint_id, safe="")
    return yarl.URL(harness.base_url + path + query, encoded=True)


def endpoint_url(harness: Harness, cloud_provider: str, endpoint_id: str | None = None) -> yarl.URL:
    return v2_url(
        harness,
        cloud_provider,
        SERVICE_OF[cloud_provider],
        endpoint_id=EXISTING_OF[cloud_provider] if endpoint_id is None else endpoint_id,
    )


async def v2_get(harness: Harness, url: yarl.URL, **kwargs: Any) -> Answer:
    return await harness.call("GET", url, headers=V2_ACCEPT, **kwargs)


async def v2_post(harness: Harness, url: yarl.URL, body: object) -> Answer:
    """As the spec (and the monitor's client) send it: the body in the versioned type."""
    headers = {**V2_ACCEPT, "Content-Type": V2_ACCEPT["Accept"]}
    return await harness.call("POST", url, data=json.dumps(body), headers=headers)


def v2_status(answer: Answer, cloud_provider: str) -> str:
    status: str = answer.json()[STATUS_FIELD_OF[cloud_provider]]
    return status


@pytest.mark.parametrize("cloud_provider", PROVIDERS)
async def test_v2_get_serves_each_providers_endpoint_document(
    start_harness: StartHarness, cloud_provider: str
) -> None:
    harness = await start_harness(
        scenario(
            provider_endpoint("AWS"),
            provider_endpoint("AZURE", status="FAILED", error_message="rejected"),
            provider_endpoint("GCP", status="VERIFIED"),
        )
    )

    answer = await v2_get(harness, endpoint_url(harness, cloud_provider))

    assert answer.status == 200
    assert answer.headers["Content-Type"] == V2_CONTENT_TYPE
    document = answer.json()
    if cloud_provider == "AWS":
        assert document == {
            "cloudProvider": "AWS",
            "deleteRequested": False,
            "errorMessage": None,
            "interfaceEndpointId": ENDPOINT,
            "connectionStatus": "AVAILABLE",
        }
    elif cloud_provider == "AZURE":
        ip_address = document.pop("privateEndpointIPAddress")
        assert ipaddress.ip_address(ip_address).is_private
        assert document == {
            "cloudProvider": "AZURE",
            "deleteRequested": False,
            "errorMessage": "rejected",
            "privateEndpointResourceId": AZURE_ID,
            "status": "FAILED",
        }
    else:
        [member] = document.pop("endpoints")
        assert ipaddress.ip_address(member.pop("ipAddress")).is_private
        # A forwarding rule's enum has no VERIFIED: the rules are still INITIATING.
        assert member == {"endpointName": f"{GCP_NAME}-0", "status": "INITIATING"}
        assert document == {
            "cloudProvider": "GCP",
            "deleteRequested": False,
            "errorMessage": None,
            "endpointGroupName": GCP_NAME,
            "status": "VERIFIED",
        }
    # The same document, every time: derived addresses are deterministic.
    assert (
        harness.simulator.endpoint_state(
            GROUP, SERVICE_OF[cloud_provider], EXISTING_OF[cloud_provider], api_version="v2"
        )
        == answer.json()
    )
    assert harness.simulator.stats.by_endpoint == Counter({("GET", EXISTING_OF[cloud_provider]): 1})


async def test_v2_lists_services_with_the_ids_of_their_existing_endpoints(
    start_harness: StartHarness,
) -> None:
    served = scenario(
        provider_endpoint("AWS"),
        provider_endpoint("AZURE"),
        provider_endpoint("AZURE", NEW_AZURE_ID, exists=False),
        provider_endpoint("GCP"),
        endpoint_services=[
            service("AZURE", region="EUROPE_WEST", status="FAILED", error_message="no subnet"),
        ],
    )
    harness = await start_harness(served)

    aws = await v2_get(harness, v2_url(harness, "AWS"))
    azure = await v2_get(harness, v2_url(harness, "AZURE"))
    gcp = await v2_get(harness, v2_url(harness, "GCP"))
    one = await v2_get(harness, v2_url(harness, "AZURE", AZURE_SERVICE))
    other_group = await v2_get(harness, v2_url(harness, "AZURE", group_id=OTHER_GROUP))
    unknown = await v2_get(harness, v2_url(harness, "GCP", AZURE_SERVICE))

    [aws_service] = aws.json()
    assert aws_service.pop("endpointServiceName").startswith(
        "com.amazonaws.vpce.us-east-1.vpce-svc-"  # AWS' own spelling of US_EAST_1
    )
    assert aws_service == {
        "id": LINK,
        "cloudProvider": "AWS",
        "regionName": "US_EAST_1",
        "status": "AVAILABLE",
        "errorMessage": None,
        "interfaceEndpoints": [ENDPOINT],
    }
    assert azure.json() == [
        {
            "id": AZURE_SERVICE,
            "cloudProvider": "AZURE",
            "regionName": "EUROPE_WEST",
            "status": "FAILED",
            "errorMessage": "no subnet",
            "privateEndpoints": [AZURE_ID],
            "privateLinkServiceName": f"pls_{AZURE_SERVICE}",
        }
    ]
    [gcp_service] = gcp.json()
    assert len(gcp_service.pop("serviceAttachmentNames")) == 1
    assert gcp_service == {
        "id": GCP_SERVICE,
        "cloudProvider": "GCP",
        "regionName": "CENTRAL_US",
        "status": "AVAILABLE",
        "errorMessage": None,
        "endpointGroupNames": [GCP_NAME],
    }
    assert one.json() == azure.json()[0]
    assert one.headers["Content-Type"] == V2_CONTENT_TYPE
    assert (other_group.status, other_group.json()) == (200, [])
    assert unknown.status == 404
    assert unknown.json()["errorCode"] == "RESOURCE_NOT_FOUND"
    assert harness.simulator.stats.by_endpoint == Counter()


@pytest.mark.parametrize("cloud_provider", PROVIDERS)
async def test_v2_post_creates_an_endpoint_that_progresses_then_conflicts(
    start_harness: StartHarness, cloud_provider: str
) -> None:
    harness = await start_harness(every_provider(step_seconds=10))
    collection = v2_url(harness, cloud_provider, SERVICE_OF[cloud_provider], collection=True)
    new_id = NEW_OF[cloud_provider]

    created = await v2_post(harness, collection, POST_BODY_OF[cloud_provider])
    statuses = [v2_status(created, cloud_provider)]
    for _ in PROGRESSION_OF[cloud_provider][1:]:
        harness.clock.advance(10)
        statuses.append(
            v2_status(
                await v2_get(harness, endpoint_url(harness, cloud_provider, new_id)), cloud_provider
            )
        )
    harness.clock.advance(100)
    settled = await v2_get(harness, endpoint_url(harness, cloud_provider, new_id))
    again = await v2_post(harness, collection, POST_BODY_OF[cloud_provider])
    listed = await v2_get(harness, v2_url(harness, cloud_provider, SERVICE_OF[cloud_provider]))

    assert created.status == 200  # the spec's answer to this POST (v1.0's is 201)
    assert created.headers["Content-Type"] == V2_CONTENT_TYPE
    assert statuses == PROGRESSION_OF[cloud_provider]
    assert v2_status(settled, cloud_provider) == "AVAILABLE"
    if cloud_provider == "AZURE":
        assert settled.json()["privateEndpointIPAddress"] == "10.0.0.4"
        assert settled.json()["privateEndpointResourceId"] == NEW_AZURE_ID
    if cloud_provider == "GCP":
        assert settled.json()["endpoints"] == [
            {"endpointName": "ml-psc-0", "ipAddress": "10.0.0.5", "status": "AVAILABLE"}
        ]
    assert again.status == 409
    assert again.json()["errorCode"] == "PRIVATE_ENDPOINT_ALREADY_EXISTS"
    id_field = {
        "AWS": "interfaceEndpoints",
        "AZURE": "privateEndpoints",
        "GCP": "endpointGroupNames",
    }
    assert listed.json()[id_field[cloud_provider]] == [EXISTING_OF[cloud_provider], new_id]
    assert harness.simulator.stats.by_endpoint[("POST", new_id)] == 2


@pytest.mark.parametrize("cloud_provider", PROVIDERS)
async def test_v2_delete_shows_deleting_for_one_step_then_the_endpoint_is_gone(
    start_harness: StartHarness, cloud_provider: str
) -> None:
    harness = await start_harness(every_provider(step_seconds=10))
    url = endpoint_url(harness, cloud_provider)

    deleted = await harness.call("DELETE", url, headers=V2_ACCEPT)
    deleting = await v2_get(harness, url)
    harness.clock.advance(10)
    gone = await v2_get(harness, url)
    deleted_again = await harness.call("DELETE", url, headers=V2_ACCEPT)
    service_after = await v2_get(
        harness, v2_url(harness, cloud_provider, SERVICE_OF[cloud_provider])
    )

    assert deleted.status == 204
    assert (v2_status(deleting, cloud_provider), deleting.json()["deleteRequested"]) == (
        "DELETING",
        True,
    )
    assert [gone.status, deleted_again.status] == [404, 404]
    assert gone.json()["errorCode"] == "RESOURCE_NOT_FOUND"
    assert service_after.status == 200
    assert EXISTING_OF[cloud_provider] not in json.dumps(service_after.json())


async def test_v2_post_to_an_unknown_service_is_a_404(start_harness: StartHarness) -> None:
    harness = await start_harness(every_provider())
    collection = v2_url(harness, "AZURE", OTHER_LINK, collection=True)

    answer = await v2_post(harness, collection, POST_BODY_OF["AZURE"])

    assert answer.status == 404
    assert answer.json()["errorCode"] == "RESOURCE_NOT_FOUND"
    assert harness.simulator.endpoint_state(GROUP, OTHER_LINK, NEW_AZURE_ID) is None


@pytest.mark.parametrize(
    ("cloud_provider", "body", "error_code", "parameter"),
    [
        ("AWS", {}, "MISSING_ATTRIBUTE", "id"),
        ("AWS", {"interfaceEndpointId": NEW_AWS}, "INVALID_ATTRIBUTE", "interfaceEndpointId"),
        ("AWS", {"id": "vpce-XYZ"}, "INVALID_ATTRIBUTE", "id"),
        ("AZURE", {"id": NEW_AZURE_ID}, "MISSING_ATTRIBUTE", "privateEndpointIPAddress"),
        (
            "AZURE",
            {"id": "/subscriptions/nope", "privateEndpointIPAddress": "10.0.0.4"},
            "INVALID_ATTRIBUTE",
            "id",
        ),
        (
            "AZURE",
            {"id": NEW_AZURE_ID, "privateEndpointIPAddress": "10.0.0.999"},
            "INVALID_ATTRIBUTE",
            "privateEndpointIPAddress",
        ),
        (
            "GCP",
            {**GCP_PROJECT, "endpointGroupName": "Bad_Name"},
            "INVALID_ATTRIBUTE",
            "endpointGroupName",
        ),
        (
            "GCP",
            {**GCP_PROJECT, "endpointGroupName": "ml-psc", "endpoints": []},
            "INVALID_ATTRIBUTE",
            "endpoints",
        ),
        (
            "GCP",
            {**GCP_PROJECT, "endpointGroupName": "ml-psc", "endpoints": [{"endpointName": "x"}]},
            "INVALID_ATTRIBUTE",
            "endpoints",
        ),
        # The spec requires the project the forwarding rules live in.
        ("GCP", {"endpointGroupName": "ml-psc"}, "MISSING_ATTRIBUTE", "gcpProjectId"),
        (
            "GCP",
            {"endpointGroupName": "ml-psc", "gcpProjectId": "P_1"},
            "INVALID_ATTRIBUTE",
            "gcpProjectId",
        ),
        ("GCP", [], "INVALID_JSON", None),
    ],
)
async def test_v2_post_rejects_bad_bodies_per_provider(
    start_harness: StartHarness,
    cloud_provider: str,
    body: object,
    error_code: str,
    parameter: str | None,
) -> None:
    harness = await start_harness(every_provider())
    collection = v2_url(harness, cloud_provider, SERVICE_OF[cloud_provider], collection=True)

    answer = await v2_post(harness, collection, body)

    assert answer.status == 400
    assert answer.json()["errorCode"] == error_code
    if parameter is not None:
        assert answer.json()["parameters"] == [parameter]
    assert harness.simulator.stats.by_endpoint == Counter()


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        ("application/vnd.atlas.2023-01-01+json", 200, V2_CONTENT_TYPE),
        # A later date gets the route's newest version (the spec's examples send 2025-03-12).
        ("application/vnd.atlas.2025-03-12+json", 200, V2_CONTENT_TYPE),
        ("application/vnd.atlas.2099-01-01+json;charset=utf-8", 200, V2_CONTENT_TYPE),
        (
            "application/json, application/vnd.atlas.2023-01-01+json;q=0.5",
            200,
            V2_CONTENT_TYPE,
        ),
        # Atlas serves v2 only for a versioned Accept, and no version before the first.
        ("application/vnd.atlas.2022-12-31+json", 406, "application/json"),
        ("application/vnd.atlas.2023-02-30+json", 406, "application/json"),
        ("application/json", 406, "application/json"),
        ("*/*", 406, "application/json"),
        (None, 406, "application/json"),
    ],
)
async def test_v2_accept_header_picks_the_version(
    start_harness: StartHarness, accept: str | None, status: int, content_type: str
) -> None:
    harness = await start_harness(every_provider())
    headers = {} if accept is None else {"Accept": accept}
    # Without an Accept of ours, aiohttp would send its own "*/*".
    skip_auto_headers = ("Accept",) if accept is None else ()

    answer = await harness.call(
        "GET", endpoint_url(harness, "AWS"), headers=headers, skip_auto_headers=skip_auto_headers
    )

    assert answer.status == status
    assert answer.headers["Content-Type"] == content_type
    if status == 406:
        body = answer.json()
        assert body["error"] == 406
        assert body["errorCode"] == "INVALID_VERSION_DATE"
        assert answer.headers["X-Error-Code"] == "INVALID_VERSION_DATE"
        assert body["reason"] == "Not Acceptable"
        assert "2023-01-01" in body["detail"]


async def test_v1_ignores_the_v2_accept_header(start_harness: StartHarness) -> None:
    harness = await start_harness()

    answer = await harness.call(
        "GET", harness.url(), headers={"Accept": "application/vnd.atlas.2099-01-01+json"}
    )

    assert (answer.status, answer.headers["Content-Type"]) == (200, "application/json")
    assert answer.json() == atlas_body("AVAILABLE")


@pytest.mark.parametrize(
    ("path", "error_code", "parameters"),
    [
        (f"aws/endpointService/{LINK}/endpoint/{ENDPOINT}", "INVALID_ENUM_VALUE", ["aws"]),
        ("ORACLE/endpointService", "INVALID_ENUM_VALUE", ["ORACLE"]),
        (f"AWS/endpointService/{LINK}/endpoint/vpce-XYZ", "PATH_PARAM_PARSE_ERROR", ["endpointId"]),
        (
            f"AZURE/endpointService/{AZURE_SERVICE}/endpoint/not-an-azure-id",
            "PATH_PARAM_PARSE_ERROR",
            ["endpointId"],
        ),
        (
            f"GCP/endpointService/{GCP_SERVICE}/endpoint/Bad_Name",
            "PATH_PARAM_PARSE_ERROR",
            ["endpointId"],
        ),
        ("GCP/endpointService/short", "PATH_PARAM_PARSE_ERROR", ["serviceId"]),
    ],
)
async def test_v2_bad_providers_and_malformed_ids_are_400s(
    start_harness: StartHarness, path: str, error_code: str, parameters: list[str]
) -> None:
    harness = await start_harness(every_provider())
    url = f"{harness.base_url}{V2_ROOT}/groups/{GROUP}/privateEndpoint/{path}"

    answer = await harness.call("GET", url, headers=V2_ACCEPT)

    assert answer.status == 400
    assert answer.json()["errorCode"] == error_code
    assert answer.json()["parameters"] == parameters


async def test_url_encoded_azure_ids_reach_their_endpoint_through_a_real_client(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(every_provider())
    encoded = endpoint_url(harness, "AZURE")
    other_case = endpoint_url(
        harness, "AZURE", AZURE_ID.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")
    )
    # Unencoded, the id's slashes become path segments that match no route.
    unencoded = yarl.URL(str(encoded).replace(quote(AZURE_ID, safe=""), AZURE_ID[1:]))

    digest = await v2_get(harness, encoded)
    control = await harness.call(
        "PUT",
        yarl.URL(
            f"{harness.base_url}/_simulator/endpoints/{GROUP}/{AZURE_SERVICE}/"
            + quote(AZURE_ID, safe=""),
            encoded=True,
        ),
        session=harness.raw,
        json={"status": "FAILED", "error_message": "rejected"},
    )
    after_control = await v2_get(harness, other_case)
    not_matched = await v2_get(harness, unencoded)

    assert "%2Fsubscriptions%2F" in encoded.raw_path
    assert digest.status == 200
    assert digest.json()["privateEndpointResourceId"] == AZURE_ID
    assert control.status == 204
    # Azure ids compare case-insensitively; the document keeps the first spelling.
    assert after_control.status == 200
    assert after_control.json()["status"] == "FAILED"
    assert after_control.json()["privateEndpointResourceId"] == AZURE_ID
    assert not_matched.status == 404
    assert harness.simulator.stats.by_endpoint[("GET", AZURE_ID)] == 1


async def test_faults_timelines_and_stats_are_shared_by_v1_and_v2(
    start_harness: StartHarness,
) -> None:
    served = scenario(
        endpoint(faults=[{"methods": ["GET"], "status": 503, "times": 1, "retry_after": 7}]),
        provider_endpoint(
            "AZURE",
            timeline=[{"after_seconds": 60, "status": "FAILED", "error_message": "gone"}],
        ),
    )
    harness = await start_harness(served)
    harness.simulator.add_fault(GROUP, AZURE_SERVICE, AZURE_ID, Fault(status=500, times=1))

    v2_faulted = await v2_get(harness, endpoint_url(harness, "AWS"))
    v1_after = await harness.get()
    v2_after = await v2_get(harness, endpoint_url(harness, "AWS"))
    azure_faulted = await v2_get(harness, endpoint_url(harness, "AZURE"))
    azure_before = await v2_get(harness, endpoint_url(harness, "AZURE"))
    harness.clock.advance(60)
    azure_after = await v2_get(harness, endpoint_url(harness, "AZURE"))

    assert (v2_faulted.status, v2_faulted.headers["Retry-After"]) == (503, "7")
    # Atlas sends v2 errors as plain JSON, their code repeated in a header.
    assert v2_faulted.headers["Content-Type"] == "application/json"
    assert v2_faulted.json()["errorCode"] == "UNEXPECTED_ERROR"
    assert v2_faulted.headers["X-Error-Code"] == "UNEXPECTED_ERROR"
    assert v1_after.json() == atlas_body("AVAILABLE")
    assert v2_after.json()["connectionStatus"] == "AVAILABLE"
    assert azure_faulted.status == 500
    assert (azure_before.json()["status"], azure_before.json()["errorMessage"]) == (
        "AVAILABLE",
        None,
    )
    assert (azure_after.json()["status"], azure_after.json()["errorMessage"]) == (
        "FAILED",
        "gone",
    )
    assert harness.simulator.stats.by_endpoint == Counter(
        {("GET", ENDPOINT): 3, ("GET", AZURE_ID): 3}
    )
    assert harness.simulator.stats.requests == Counter(
        {("GET", 401): 1, ("GET", 200): 4, ("GET", 503): 1, ("GET", 500): 1}
    )


async def test_v1_serves_aws_endpoints_only(start_harness: StartHarness) -> None:
    harness = await start_harness(every_provider())

    gcp_on_v1 = await harness.get(GCP_NAME, private_link_id=GCP_SERVICE)
    posted_on_v1 = await harness.post({"interfaceEndpointId": NEW_AWS})
    seen_on_v2 = await v2_get(harness, endpoint_url(harness, "AWS", NEW_AWS))

    assert gcp_on_v1.status == 400
    assert gcp_on_v1.json()["errorCode"] == "PATH_PARAM_PARSE_ERROR"
    assert (
        harness.simulator.endpoint_state(GROUP, GCP_SERVICE, GCP_NAME, api_version="v1.0") is None
    )
    assert posted_on_v1.status == 201
    assert seen_on_v2.json()["connectionStatus"] == "NONE"


async def test_rate_limit_headers_and_429_on_v2_share_the_groups_bucket(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(every_provider(rate_limit_per_minute=3))

    services = await v2_get(harness, v2_url(harness, "GCP"))
    azure = await v2_get(harness, endpoint_url(harness, "AZURE"))
    v1 = await harness.get()
    limited = await v2_get(harness, endpoint_url(harness, "GCP"))
    harness.clock.advance(20)
    refilled = await v2_get(harness, endpoint_url(harness, "GCP"))

    assert [
        (answer.status, answer.headers["RateLimit-Remaining"]) for answer in (services, azure, v1)
    ] == [
        (200, "2"),
        (200, "1"),
        (200, "0"),
    ]
    assert all(answer.headers["RateLimit-Limit"] == "3" for answer in (services, azure, limited))
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "20"
    assert limited.headers["Content-Type"] == "application/json"
    assert limited.json()["errorCode"] == "RATE_LIMITED"
    assert (refilled.status, refilled.headers["RateLimit-Remaining"]) == (200, "0")


# Service-account login (OAuth 2 client credentials) and Bearer tokens


async def request_token(
    harness: Harness,
    *,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    grant_type: str | None = "client_credentials",
    **kwargs: Any,
) -> Answer:
    data = {} if grant_type is None else {"grant_type": grant_type}
    # RFC 6749 section 2.3.1: each form-encoded, then joined for HTTP Basic.
    credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return await harness.call(
        "POST",
        f"{harness.base_url}/api/oauth/token",
        session=harness.raw,
        headers={"Authorization": "Basic " + b64encode(credentials.encode()).decode()},
        **({"data": data} | kwargs),
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **V2_ACCEPT}


async def test_a_token_from_the_client_credentials_grant_works_on_v1_and_v2(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(
        every_provider(), client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )

    granted = await request_token(harness)
    token = granted.json()["access_token"]
    v1 = await harness.call("GET", harness.url(), session=harness.raw, headers=bearer(token))
    v2 = await harness.call(
        "GET", endpoint_url(harness, "AZURE"), session=harness.raw, headers=bearer(token)
    )
    stats = await harness.call("GET", f"{harness.base_url}/_simulator/stats", session=harness.raw)

    assert granted.status == 200
    assert granted.headers["Cache-Control"] == "no-store"
    assert granted.json() == {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
    assert len(token) >= 32
    assert (v1.status, v1.json()) == (200, atlas_body("AVAILABLE"))
    assert (v2.status, v2.json()["privateEndpointResourceId"]) == (200, AZURE_ID)
    assert harness.simulator.stats.challenges == 0
    assert harness.simulator.stats.token_requests == Counter({200: 1})
    assert stats.json()["token_requests"] == {"200": 1}
    assert stats.json()["total"] == 2


async def test_token_requests_decode_form_encoded_credentials(
    start_harness: StartHarness,
) -> None:
    """A ':' in the id and ``+ / %`` in the secret survive, as RFC 6749 2.3.1 has it."""
    client_id, client_secret = "mdb_sa:id 1", "s+cr/t%2F:x"
    harness = await start_harness(client_id=client_id, client_secret=client_secret)

    encoded = await request_token(harness, client_id=client_id, client_secret=client_secret)
    plain = await harness.call(
        "POST",
        f"{harness.base_url}/api/oauth/token",
        session=harness.raw,
        headers={
            "Authorization": "Basic " + b64encode(f"{client_id}:{client_secret}".encode()).decode()
        },
        data={"grant_type": "client_credentials"},
    )

    assert encoded.status == 200
    assert (plain.status, plain.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize(
    ("configured", "sent", "status", "error"),
    [
        ((CLIENT_ID, CLIENT_SECRET), {"client_secret": "wrong"}, 401, "invalid_client"),
        ((CLIENT_ID, CLIENT_SECRET), {"client_id": "mdb_sa_id_other"}, 401, "invalid_client"),
        ((None, None), {}, 401, "invalid_client"),
        ((CLIENT_ID, CLIENT_SECRET), {"grant_type": "password"}, 400, "unsupported_grant_type"),
        ((CLIENT_ID, CLIENT_SECRET), {"grant_type": None}, 400, "invalid_request"),
        (
            (CLIENT_ID, CLIENT_SECRET),
            {"json": {"grant_type": "client_credentials"}},
            400,
            "invalid_request",
        ),
    ],
)
async def test_token_requests_are_refused_as_oauth_servers_do(
    start_harness: StartHarness,
    configured: tuple[str | None, str | None],
    sent: dict[str, Any],
    status: int,
    error: str,
) -> None:
    harness = await start_harness(client_id=configured[0], client_secret=configured[1])
    kwargs = dict(sent)
    if "json" in kwargs:
        kwargs["data"] = None

    answer = await request_token(harness, **kwargs)

    assert answer.status == status
    assert answer.json()["error"] == error
    assert "access_token" not in answer.json()
    assert CLIENT_SECRET not in answer.text
    assert harness.simulator.stats.token_requests == Counter({status: 1})
    assert harness.simulator.stats.total() == 0


async def test_tokens_expire_by_the_injected_clock_without_a_digest_challenge(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(
        every_provider(token_lifetime_seconds=60), client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    granted = await request_token(harness)
    token = granted.json()["access_token"]
    url = endpoint_url(harness, "GCP")

    harness.clock.advance(59)
    fresh = await harness.call("GET", url, session=harness.raw, headers=bearer(token))
    harness.clock.advance(1)
    expired = await harness.call("GET", url, session=harness.raw, headers=bearer(token))
    unknown = await harness.call(
        "GET", harness.url(), session=harness.raw, headers=bearer("x" * 43)
    )
    anonymous = await harness.call("GET", harness.url(), session=harness.raw)

    assert granted.json()["expires_in"] == 60
    assert fresh.status == 200
    for answer in (expired, unknown):
        assert answer.status == 401
        assert json.loads(answer.text) == json.loads(UNAUTHORIZED_TEXT)
        assert "WWW-Authenticate" not in answer.headers
    assert anonymous.status == 401
    assert CHALLENGE.fullmatch(anonymous.headers["WWW-Authenticate"])
    assert harness.simulator.stats.challenges == 3
    assert harness.simulator.stats.by_endpoint == Counter({("GET", GCP_NAME): 1})


def test_token_registry_forgets_the_oldest_tokens_past_its_capacity() -> None:
    registry = _TokenRegistry(capacity=3)

    tokens = [registry.issue(now=0, lifetime=10) for _ in range(5)]

    assert len(registry) == 3
    assert [registry.is_valid(token, now=5) for token in tokens] == [False, False, True, True, True]
    assert registry.is_valid(tokens[4], now=10) is False
    assert len(registry) == 2


# v2 steering, control routes and scenario keys


def test_steering_methods_take_azure_and_gcp_ids() -> None:
    clock = FakeClock()
    simulator = Simulator(scenario(), public_key=PUBLIC_KEY, private_key=PRIVATE_KEY, clock=clock)

    simulator.set_endpoint(GROUP, GCP_SERVICE, "ml-psc")
    simulator.set_endpoint(GROUP, AZURE_SERVICE, AZURE_ID, status="AVAILABLE")
    new_gcp = simulator.endpoint_state(GROUP, GCP_SERVICE, "ml-psc")
    azure_by_other_case = simulator.endpoint_state(GROUP, AZURE_SERVICE, AZURE_ID.lower())
    simulator.remove_endpoint(GROUP, AZURE_SERVICE, AZURE_ID, cloud_provider="AZURE")

    assert new_gcp is not None
    assert (new_gcp["cloudProvider"], new_gcp["status"]) == ("GCP", "INITIATING")
    assert azure_by_other_case is not None
    assert azure_by_other_case["privateEndpointResourceId"] == AZURE_ID
    assert simulator.endpoint_state(GROUP, AZURE_SERVICE, AZURE_ID) is None
    # The services they named exist now, with the provider's default region.
    gcp_service = simulator.service_state(GROUP, "GCP", GCP_SERVICE)
    assert gcp_service is not None
    assert (gcp_service["regionName"], gcp_service["endpointGroupNames"]) == (
        "CENTRAL_US",
        ["ml-psc"],
    )
    with pytest.raises(ValueError, match="interface_endpoint_id"):
        simulator.set_endpoint(GROUP, GCP_SERVICE, "ml-psc", cloud_provider="AZURE")
    with pytest.raises(ValueError, match="cloud_provider"):
        simulator.add_fault(GROUP, LINK, ENDPOINT, Fault(), cloud_provider="aws")
    with pytest.raises(ValueError, match="cloud_provider"):
        simulator.set_service(GROUP, "ORACLE", GCP_SERVICE, status="FAILED")


def test_service_timelines_and_set_service() -> None:
    clock = FakeClock()
    served = scenario(
        endpoint_services=[
            service(
                "GCP",
                timeline=[
                    {"after_seconds": 30, "status": "FAILED", "error_message": "quota"},
                    {"after_seconds": 10, "status": "INITIATING"},
                ],
            )
        ]
    )
    simulator = Simulator(served, public_key=PUBLIC_KEY, private_key=PRIVATE_KEY, clock=clock)

    def status() -> tuple[str, str | None]:
        document = simulator.service_state(GROUP, "GCP", GCP_SERVICE)
        assert document is not None
        return document["status"], document["errorMessage"]

    seen = [status()]
    for seconds in (10, 20):
        clock.advance(seconds)
        seen.append(status())
    simulator.set_service(GROUP, "GCP", GCP_SERVICE, status="AVAILABLE")
    clock.advance(100)
    seen.append(status())
    simulator.set_service(GROUP, "AZURE", AZURE_SERVICE, error_message="subnet")

    assert seen == [
        ("AVAILABLE", None),
        ("INITIATING", None),
        ("FAILED", "quota"),
        ("AVAILABLE", None),
    ]
    assert simulator.service_state(GROUP, "AZURE", AZURE_SERVICE) == {
        "id": AZURE_SERVICE,
        "cloudProvider": "AZURE",
        "regionName": "US_EAST_2",
        "status": "AVAILABLE",
        "errorMessage": "subnet",
        "privateEndpoints": [],
        "privateLinkServiceName": f"pls_{AZURE_SERVICE}",
    }
    assert simulator.service_state(GROUP, "AWS", AZURE_SERVICE) is None


async def test_control_routes_steer_azure_gcp_endpoints_and_services(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(every_provider())
    control = f"{harness.base_url}/_simulator"
    azure = yarl.URL(
        f"{control}/endpoints/{GROUP}/{AZURE_SERVICE}/{quote(AZURE_ID, safe='')}", encoded=True
    )

    answers = [
        await harness.call(
            "PUT",
            f"{control}/services/{GROUP}/AZURE/{AZURE_SERVICE}",
            session=harness.raw,
            json={"status": "FAILED", "error_message": "policies"},
        ),
        await harness.call(
            "POST", f"{azure}/faults", session=harness.raw, json={"status": 502, "times": 1}
        ),
        await harness.call(
            "PUT",
            f"{control}/endpoints/{GROUP}/{GCP_SERVICE}/ml-psc?cloud_provider=GCP",
            session=harness.raw,
            json={"status": "VERIFIED"},
        ),
    ]
    service_after = await v2_get(harness, v2_url(harness, "AZURE", AZURE_SERVICE))
    faulted = await v2_get(harness, endpoint_url(harness, "AZURE"))
    gcp = await v2_get(harness, endpoint_url(harness, "GCP", "ml-psc"))
    removed = await harness.call("DELETE", azure, session=harness.raw)
    azure_after = await v2_get(harness, endpoint_url(harness, "AZURE"))
    refused = [
        await harness.call(
            "PUT", f"{control}/services/{GROUP}/aws/{LINK}", session=harness.raw, json={}
        ),
        await harness.call(
            "PUT",
            f"{control}/endpoints/{GROUP}/{AZURE_SERVICE}/{ENDPOINT}?cloud_provider=AZURE",
            session=harness.raw,
            json={},
        ),
        await harness.call(
            "PUT",
            f"{control}/services/{GROUP}/GCP/{GCP_SERVICE}",
            session=harness.raw,
            json={"status": "FAILED", "region": "x"},
        ),
    ]

    assert [answer.status for answer in answers] == [204, 204, 204]
    assert (service_after.json()["status"], service_after.json()["errorMessage"]) == (
        "FAILED",
        "policies",
    )
    assert faulted.status == 502
    assert gcp.json()["status"] == "VERIFIED"
    assert removed.status == 204
    assert azure_after.status == 404
    assert [answer.status for answer in refused] == [400, 400, 400]
    assert "cloud_provider" in refused[0].json()["detail"]
    azure_problem = "interface_endpoint_id: must be an Azure private endpoint resource id"
    assert azure_problem in refused[1].json()["detail"]
    assert "region: Extra inputs" in refused[2].json()["detail"]


def test_scenario_problems_in_v2_keys_name_their_field(tmp_path: Path) -> None:
    path = write(
        tmp_path / "scenario.yaml",
        f"""
token_lifetime_seconds: 0
endpoint_services:
  - group_id: "{GROUP}"
    id: short
    cloud_provider: ORACLE
  - group_id: "{GROUP}"
    id: "{AZURE_SERVICE}"
    cloud_provider: AZURE
    timeline:
      - after_seconds: 1
    colour: red
endpoints:
  - group_id: "{GROUP}"
    private_link_id: "{AZURE_SERVICE}"
    cloud_provider: AZURE
    interface_endpoint_id: {ENDPOINT}
  - group_id: "{GROUP}"
    private_link_id: "{GCP_SERVICE}"
    cloud_provider: GCP
    interface_endpoint_id: Bad_Name
  - group_id: "{GROUP}"
    private_link_id: "{GCP_SERVICE}"
    cloud_provider: gcp
    interface_endpoint_id: analytics-psc
""",
    )

    with pytest.raises(ScenarioError) as raised:
        load_scenario(path)

    problems = raised.value.problems
    assert [problem.partition(": ")[0] for problem in problems] == [
        "token_lifetime_seconds",
        "endpoint_services.0.id",
        "endpoint_services.0.cloud_provider",
        "endpoint_services.1.timeline.0",
        "endpoint_services.1.colour",
        "endpoints.0.interface_endpoint_id",
        "endpoints.1.interface_endpoint_id",
        "endpoints.2.cloud_provider",
    ]
    assert "must be an Azure private endpoint resource id" in problems[5]
    assert "must be a GCP endpoint group name" in problems[6]
    assert "'AWS', 'AZURE' or 'GCP'" in problems[7]


def test_duplicate_services_and_case_variants_of_azure_ids_are_scenario_errors(
    tmp_path: Path,
) -> None:
    document = {
        "endpoint_services": [service("AZURE"), service("AZURE", region="EUROPE_WEST")],
        "endpoints": [provider_endpoint("AZURE"), provider_endpoint("AZURE", AZURE_ID.lower())],
    }
    path = write(tmp_path / "scenario.json", json.dumps(document))

    with pytest.raises(ScenarioError) as raised:
        load_scenario(path)

    assert [problem.partition(" (")[0] for problem in raised.value.problems] == [
        "endpoint_services: entry 1 repeats entry 0",
        "endpoints: entry 1 repeats entry 0",
    ]


def test_simulate_takes_the_service_account_from_flags_or_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor import cli

    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID)
    monkeypatch.delenv("MONGODB_ATLAS_CLIENT_SECRET", raising=False)
    parsed = cli._parser().parse_args(["simulate", "--client-id", "a", "--client-secret", "b"])

    only_id = cli.main(["simulate", "--port", "0"])

    assert (parsed.client_id, parsed.client_secret) == ("a", "b")
    assert only_id == 2
    assert "--client-id and --client-secret" in capsys.readouterr().err


# The packaged demo scenario: Azure and GCP


DEMO_AZURE_SERVICE_EU = "66b2c3d4e5f60718293a4b5c"


def test_default_scenario_holds_the_azure_and_gcp_demo_endpoints_and_services() -> None:
    demo = default_scenario()

    endpoints: dict[tuple[str, str, str], list[tuple[str, str, str | None]]] = {}
    for entry in demo.endpoints:
        if entry.cloud_provider != "AWS":
            key = (entry.cloud_provider, entry.group_id, entry.private_link_id)
            endpoints.setdefault(key, []).append(
                (entry.interface_endpoint_id.rpartition("/")[2], entry.status, entry.error_message)
            )
    services = {
        (entry.cloud_provider, entry.group_id, entry.id): (entry.region, entry.status)
        for entry in demo.endpoint_services
    }

    assert endpoints == {
        ("AZURE", GROUP, AZURE_SERVICE): [
            ("payments-pe", "AVAILABLE", None),
            (
                "ledger-pe",
                "FAILED",
                "Private endpoint connection was rejected by the Atlas private link service",
            ),
        ],
        ("GCP", GROUP, GCP_SERVICE): [
            ("analytics-psc", "AVAILABLE", None),
            ("ml-psc", "INITIATING", None),
        ],
        ("AZURE", OTHER_GROUP, DEMO_AZURE_SERVICE_EU): [("reporting-pe", "AVAILABLE", None)],
    }
    assert services == {
        ("AWS", GROUP, LINK): ("US_EAST_1", "AVAILABLE"),
        ("AWS", OTHER_GROUP, OTHER_LINK): ("EU_WEST_1", "AVAILABLE"),
        ("AZURE", GROUP, AZURE_SERVICE): ("US_EAST_2", "AVAILABLE"),
        ("GCP", GROUP, GCP_SERVICE): ("CENTRAL_US", "AVAILABLE"),
        ("AZURE", OTHER_GROUP, DEMO_AZURE_SERVICE_EU): ("EUROPE_WEST", "FAILED"),
    }
    assert demo.endpoint_services[-1].error_message == (
        "Azure Private Link service provisioning failed: subnet has network policies enabled"
    )


async def test_default_scenario_serves_all_three_providers_on_v2(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(default_scenario())

    aws = await v2_get(harness, v2_url(harness, "AWS", LINK))
    azure_eu = await v2_get(harness, v2_url(harness, "AZURE", group_id=OTHER_GROUP))
    payments = await v2_get(harness, endpoint_url(harness, "AZURE"))
    ml = []
    for seconds in (0, 30, 30):
        harness.clock.advance(seconds)
        ml.append((await v2_get(harness, endpoint_url(harness, "GCP", "ml-psc"))).json()["status"])

    assert aws.json()["regionName"] == "US_EAST_1"
    # Five: ledger-eu is in the second project, and search-prod waits for its POST.
    assert len(aws.json()["interfaceEndpoints"]) == 5
    [eu] = azure_eu.json()
    assert (eu["status"], eu["regionName"]) == ("FAILED", "EUROPE_WEST")
    assert [pe.rpartition("/")[2] for pe in eu["privateEndpoints"]] == ["reporting-pe"]
    assert payments.json()["status"] == "AVAILABLE"
    assert ml == ["INITIATING", "VERIFIED", "AVAILABLE"]
