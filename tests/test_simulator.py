"""The Atlas simulator over real sockets, driven by the same Digest client the monitor uses.

Time is a fake clock and latency a recording sleep, so nothing here waits for real.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import CIMultiDictProxy
from pydantic import ValidationError

from monitor import simulator as simulator_module
from monitor.lifecycle import serve_on_stack
from monitor.simulator import (
    API_ROOT,
    Fault,
    Scenario,
    ScenarioError,
    Simulator,
    _NonceRegistry,
    default_scenario,
    load_scenario,
)

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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
        self, method: str, url: str, *, session: aiohttp.ClientSession | None = None, **kwargs: Any
    ) -> Answer:
        async with (session or self.client).request(method, url, **kwargs) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def get(self, interface_endpoint_id: str = ENDPOINT, **kwargs: Any) -> Answer:
        return await self.call("GET", self.url(interface_endpoint_id, **kwargs))

    async def post(self, body: object, **kwargs: Any) -> Answer:
        return await self.call("POST", self.url(None, **kwargs), json=body)


StartSimulator = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Serve a simulator on 127.0.0.1, port 0, with a client; all torn down after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            served: Scenario | None = None, *, client_private_key: str = PRIVATE_KEY
        ) -> Harness:
            clock, sleep = FakeClock(), RecordingSleep()
            simulator = Simulator(
                served or scenario(endpoint()),
                public_key=PUBLIC_KEY,
                private_key=PRIVATE_KEY,
                clock=clock,
                sleep=sleep,
            )
            url = await serve_on_stack(stack, simulator.app, "127.0.0.1", 0)
            wire = WireLog()
            timeout = aiohttp.ClientTimeout(total=5)
            digest = aiohttp.DigestAuthMiddleware(PUBLIC_KEY, client_private_key, preemptive=True)
            client = aiohttp.ClientSession(middlewares=(digest, wire), timeout=timeout)
            stack.push_async_callback(client.close)
            raw = aiohttp.ClientSession(timeout=timeout)
            stack.push_async_callback(raw.close)
            return Harness(simulator, clock, sleep, url, client, raw, wire)

        yield start


async def test_bound_url_reports_the_real_port(start_simulator: StartSimulator) -> None:
    harness = await start_simulator()
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", harness.base_url)
    assert match is not None
    assert int(match[1]) > 0


# Digest authentication


async def test_handshake_happens_once_then_one_request_per_call(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()

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
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator(client_private_key="not-the-key")

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
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator(scenario(endpoint(), nonce_lifetime_seconds=300))
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
    start_simulator: StartSimulator,
) -> None:
    """Proves the helper the rejection cases rely on, and that nc is not enforced."""
    harness = await start_simulator()
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
    start_simulator: StartSimulator, overrides: dict[str, Any]
) -> None:
    harness = await start_simulator()
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
    start_simulator: StartSimulator, overrides: dict[str, str], parameter: str
) -> None:
    harness = await start_simulator()

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
    start_simulator: StartSimulator, interface_endpoint_id: str
) -> None:
    harness = await start_simulator()

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
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()

    found = await harness.get(query="?envelope=true")
    missing = await harness.get(OTHER_ENDPOINT, query="?envelope=true")

    assert found.status == 200
    assert found.json() == {"status": 200, "content": atlas_body("AVAILABLE")}
    assert missing.status == 404
    assert missing.json()["status"] == 404
    assert missing.json()["content"]["errorCode"] == "RESOURCE_NOT_FOUND"


async def test_pretty_indents_and_the_default_is_compact(start_simulator: StartSimulator) -> None:
    harness = await start_simulator()

    pretty = await harness.get(query="?pretty=true")
    compact = await harness.get()

    assert pretty.text == json.dumps(atlas_body("AVAILABLE"), indent=2)
    assert compact.text == json.dumps(atlas_body("AVAILABLE"), separators=(",", ":"))


# Adding and deleting


async def test_post_creates_an_endpoint_that_progresses_to_available(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator(scenario(endpoint(exists=False), step_seconds=10))
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


async def test_post_of_an_existing_endpoint_conflicts(start_simulator: StartSimulator) -> None:
    harness = await start_simulator()

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
    start_simulator: StartSimulator, body: bytes, error_code: str, parameters: list[str]
) -> None:
    harness = await start_simulator()

    answer = await harness.call(
        "POST", harness.url(None), data=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status == 400
    assert answer.json()["errorCode"] == error_code
    assert answer.json()["parameters"] == parameters
    assert harness.simulator.endpoint_state(GROUP, LINK, OTHER_ENDPOINT) is None


async def test_delete_shows_deleting_for_one_step_then_the_endpoint_is_gone(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator(scenario(endpoint(status="REJECTED"), step_seconds=10))

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
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()
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
    start_simulator: StartSimulator, fault: Fault, error_code: str
) -> None:
    harness = await start_simulator()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, fault)

    answer = await harness.get()

    assert answer.status == fault.status
    assert answer.json()["error"] == fault.status
    assert answer.json()["errorCode"] == error_code


async def test_first_matching_fault_with_uses_left_applies(
    start_simulator: StartSimulator,
) -> None:
    faults = [
        {"methods": ["DELETE"], "status": 409},
        {"times": 1},
        {"status": 500, "times": 2},
        {"status": 502},
    ]
    harness = await start_simulator(scenario(endpoint(faults=faults)))

    statuses = [(await harness.get()).status for _ in range(5)]
    delete = await harness.call("DELETE", harness.url())

    assert statuses == [200, 500, 500, 502, 502]
    assert delete.status == 409
    assert harness.simulator.endpoint_state(GROUP, LINK, ENDPOINT) == atlas_body("AVAILABLE")


async def test_dropped_get_reaches_the_client_as_a_disconnect(
    start_simulator: StartSimulator,
) -> None:
    """aiohttp resends an idempotent request once, so two drops are needed to surface."""
    harness = await start_simulator()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, Fault(drop_connection=True, times=2))

    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await harness.get()
    recovered = await harness.get()

    assert recovered.status == 200
    assert harness.simulator.stats.requests[("GET", 0)] == 2


async def test_dropped_post_reaches_the_client_and_adds_nothing(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator(scenario(endpoint(exists=False)))
    drop = Fault(methods=["POST"], drop_connection=True, times=1)
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, drop)

    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await harness.post({"interfaceEndpointId": ENDPOINT})

    assert harness.simulator.endpoint_state(GROUP, LINK, ENDPOINT) is None
    assert harness.simulator.stats.requests[("POST", 0)] == 1


async def test_truncated_body_reaches_the_client_as_a_payload_error(
    start_simulator: StartSimulator,
) -> None:
    """Headers with the whole Content-Length, half the body, then the connection closes."""
    harness = await start_simulator()
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
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()
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
    start_simulator: StartSimulator, fault: Fault, status: int, content_type: str
) -> None:
    harness = await start_simulator()
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, fault)

    answer = await harness.get()

    assert (answer.status, answer.text) == (status, fault.body)
    assert answer.headers["Content-Type"] == content_type


async def test_latency_fault_waits_with_the_injected_sleep_then_answers(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()
    slow_get = Fault(methods=["GET"], latency_seconds=0.2, retry_after=3)
    harness.simulator.add_fault(GROUP, LINK, ENDPOINT, slow_get)

    answers = [await harness.get() for _ in range(2)]
    deleted = await harness.call("DELETE", harness.url())

    assert [answer.json() for answer in answers] == [atlas_body("AVAILABLE")] * 2
    assert [answer.headers["Retry-After"] for answer in answers] == ["3", "3"]
    assert harness.sleep.delays == [0.2, 0.2]
    assert deleted.status == 204


async def test_post_faults_are_keyed_by_the_id_in_the_body(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()
    harness.simulator.add_fault(GROUP, LINK, OTHER_ENDPOINT, Fault(status=500, times=1))

    first = await harness.post({"interfaceEndpointId": OTHER_ENDPOINT})
    second = await harness.post({"interfaceEndpointId": OTHER_ENDPOINT})

    assert (first.status, second.status) == (500, 201)
    assert harness.simulator.stats.by_endpoint[("POST", OTHER_ENDPOINT)] == 2


# Timelines and explicit changes


async def test_timeline_steps_change_only_the_fields_they_name(
    start_simulator: StartSimulator,
) -> None:
    timeline = [
        {"after_seconds": 120, "status": "AVAILABLE", "error_message": None},
        {"after_seconds": 60, "status": "PENDING"},
        {"after_seconds": 180, "exists": False},
    ]
    scripted = endpoint(status="PENDING_ACCEPTANCE", error_message="no subnet", timeline=timeline)
    harness = await start_simulator(scenario(scripted))

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


async def test_explicit_changes_override_the_timeline(start_simulator: StartSimulator) -> None:
    timeline = [{"after_seconds": 60, "status": "AVAILABLE"}]
    harness = await start_simulator(scenario(endpoint(status="PENDING", timeline=timeline)))
    simulator = harness.simulator

    simulator.set_endpoint(GROUP, LINK, ENDPOINT, error_message="subnet missing")
    harness.clock.advance(100)
    kept_status = simulator.endpoint_state(GROUP, LINK, ENDPOINT)
    simulator.set_endpoint(GROUP, LINK, OTHER_ENDPOINT)
    new_endpoint = simulator.endpoint_state(GROUP, LINK, OTHER_ENDPOINT)
    simulator.remove_endpoint(GROUP, LINK, ENDPOINT)

    assert kept_status == atlas_body("PENDING", errorMessage="subnet missing")
    assert new_endpoint == atlas_body("NONE", interface_endpoint_id=OTHER_ENDPOINT)
    assert (await harness.get()).status == 404


def test_steering_methods_reject_malformed_ids() -> None:
    simulator = Simulator(scenario(), public_key=PUBLIC_KEY, private_key=PRIVATE_KEY)

    with pytest.raises(ValueError, match="interface_endpoint_id"):
        simulator.set_endpoint(GROUP, LINK, "vpce-XYZ", status="AVAILABLE")


# Rate limiting


async def test_rate_limit_per_group_with_headers_429_and_continuous_refill(
    start_simulator: StartSimulator,
) -> None:
    served = scenario(
        endpoint(),
        endpoint(group_id=OTHER_GROUP, private_link_id=OTHER_LINK),
        rate_limit_per_minute=2,
    )
    harness = await start_simulator(served)

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


async def test_no_rate_limit_headers_without_a_limit(start_simulator: StartSimulator) -> None:
    harness = await start_simulator()

    answer = await harness.get()

    assert answer.status == 200
    assert "RateLimit-Limit" not in answer.headers
    assert "RateLimit-Remaining" not in answer.headers


# Control routes


async def test_control_routes_steer_the_simulator_without_being_counted(
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator()
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
    start_simulator: StartSimulator, method: str, path: str, body: object, problem: str
) -> None:
    harness = await start_simulator()
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
    start_simulator: StartSimulator,
) -> None:
    harness = await start_simulator(default_scenario())

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
