"""The service-account login middleware against a small Atlas stand-in on 127.0.0.1.

aioresponses replaces ClientSession._request whole, middlewares included, so these tests
talk HTTP to a real aiohttp server instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from monitor.atlas import (
    AtlasAuthError,
    AtlasBadResponseError,
    AtlasError,
    AtlasRateLimitedError,
    AtlasRequestError,
    AtlasServerError,
    AtlasUnreachableError,
)
from monitor.atlas.oauth import TOKEN_PATH, ServiceAccountLogin, token_url
from tests.helpers import FakeClock, unused_port

CLIENT_ID = "mdb_sa_id_65f0c1d2e3a4b5c6d7e8f901"
CLIENT_SECRET = "mdb_sa_sk_s3cr3t-5f1d9c"
API_PATH = "/api/atlas/v2/groups/5e2211c17a3e5a48f5497de3/privateEndpoint/AWS/endpointService"

Logs = list[MutableMapping[str, Any]]
TokenReply = Callable[[], Awaitable[web.StreamResponse]]


@dataclass
class FakeAtlas:
    """Issues token-1, token-2... at the token endpoint; the API takes the valid ones."""

    expires_in: object = 3600
    token_replies: list[TokenReply] = field(default_factory=list)
    """Answers for the next token requests, in order, before normal issuing resumes."""
    reject_all: bool = False
    issued: int = 0
    valid: set[str] = field(default_factory=set)
    token_requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    api_authorizations: list[str | None] = field(default_factory=list)
    token_gate: asyncio.Event | None = None
    """When set, token requests are held until it is set."""
    token_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def revoke_all(self) -> None:
        self.valid.clear()

    async def token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests.append((dict(request.headers), await request.read()))
        self.token_arrived.set()
        if self.token_gate is not None:
            await self.token_gate.wait()
        if self.token_replies:
            return await self.token_replies.pop(0)()
        self.issued += 1
        value = f"token-{self.issued}"
        self.valid.add(value)
        return web.json_response(
            {"access_token": value, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    async def api(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        self.api_authorizations.append(authorization)
        if (
            not self.reject_all
            and authorization
            and authorization.removeprefix("Bearer ") in self.valid
        ):
            return web.json_response([])
        body = {"error": 401, "reason": "Unauthorized", "detail": "invalid token"}
        return web.json_response(body, status=401)


@dataclass
class Harness:
    atlas: FakeAtlas
    base_url: str
    login: ServiceAccountLogin
    session: aiohttp.ClientSession
    observed: list[tuple[str, str, str]]
    """(method, path, status) of every exchange the observer middleware saw."""
    clock: FakeClock

    async def get(self) -> int:
        async with self.session.get(self.base_url + API_PATH) as response:
            await response.read()
            return response.status

    @property
    def api_calls(self) -> int:
        return len(self.atlas.api_authorizations)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness() -> AsyncIterator[MakeHarness]:
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(
        atlas: FakeAtlas | None = None,
        *,
        url: str | None = None,
        login_timeout: float = 5,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
    ) -> Harness:
        atlas = atlas or FakeAtlas()
        app = web.Application()
        app.router.add_post(TOKEN_PATH, atlas.token)
        app.router.add_get(API_PATH, atlas.api)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        base_url = str(server.make_url("")).rstrip("/")
        clock = FakeClock(1000.0)
        login = ServiceAccountLogin(
            token_url=url or token_url(base_url),
            client_id=client_id,
            client_secret=SecretStr(client_secret),
            timeout=aiohttp.ClientTimeout(total=login_timeout),
            clock=clock,
        )
        observed: list[tuple[str, str, str]] = []

        async def observe(
            request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
        ) -> aiohttp.ClientResponse:
            try:
                response = await handler(request)
            except BaseException:
                observed.append((request.method, request.url.path, "error"))
                raise
            observed.append((request.method, request.url.path, str(response.status)))
            return response

        # As AtlasClient builds it: the login outside, the observer inside it.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=8),
            headers={"Accept": "application/vnd.atlas.2023-01-01+json"},
            middlewares=[login, observe],
            timeout=aiohttp.ClientTimeout(total=5),
        )
        sessions.append(session)
        return Harness(atlas, base_url, login, session, observed, clock)

    yield make
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close()


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def login_events(logs: Logs) -> Logs:
    return [line for line in logs if line["event"] == "atlas_service_account_login"]


def assert_no_secrets(*texts: object) -> None:
    for text in texts:
        rendered = str(text)
        assert CLIENT_SECRET not in rendered
        assert "token-" not in rendered


async def test_one_login_for_many_concurrent_requests(harness: MakeHarness, logs: Logs) -> None:
    h = await harness()

    statuses = await asyncio.gather(*(h.get() for _ in range(100)))

    assert statuses == [200] * 100
    assert len(h.atlas.token_requests) == 1
    assert h.atlas.api_authorizations == ["Bearer token-1"] * 100
    assert login_events(logs) == [
        {
            "event": "atlas_service_account_login",
            "log_level": "info",
            "client_id": CLIENT_ID,
            "expires_in_seconds": 3600.0,
            "reason": "initial",
        }
    ]
    # The observer sees the API exchanges only: the login does not pass the middlewares.
    assert h.observed == [("GET", API_PATH, "200")] * 100


async def test_the_token_request_is_exactly_the_client_credentials_grant(
    harness: MakeHarness,
) -> None:
    h = await harness()

    assert await h.get() == 200

    [(headers, body)] = h.atlas.token_requests
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {basic}"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Accept"] == "application/json"
    assert body == b"grant_type=client_credentials"


async def test_client_id_and_secret_are_form_encoded_before_basic(harness: MakeHarness) -> None:
    """RFC 6749 section 2.3.1, as the Go SDK does: without it, a ':' in the id would end it
    early and ``+ / %`` would reach the server as something else."""
    h = await harness(client_id="mdb_sa:id 1", client_secret="s+cr/t%2F:x~y")

    assert await h.get() == 200

    [(headers, _)] = h.atlas.token_requests
    basic = base64.b64encode(b"mdb_sa%3Aid+1:s%2Bcr%2Ft%252F%3Ax~y").decode()
    assert headers["Authorization"] == f"Basic {basic}"


async def test_the_cached_token_is_used_until_it_is_due(harness: MakeHarness) -> None:
    h = await harness()

    for _ in range(3):
        assert await h.get() == 200
        h.clock.now += 600

    assert len(h.atlas.token_requests) == 1
    assert h.atlas.api_authorizations == ["Bearer token-1"] * 3


@pytest.mark.parametrize(
    ("expires_in", "still_cached", "renewed"),
    [
        (3600, 3239.0, 3241.0),  # 10 % of the lifetime: 360 s
        (300, 239.0, 241.0),  # at least 60 s
        (30, 14.0, 16.0),  # but never before half-way
    ],
)
async def test_the_token_is_renewed_before_it_expires(
    harness: MakeHarness,
    logs: Logs,
    expires_in: int,
    still_cached: float,
    renewed: float,
) -> None:
    h = await harness(FakeAtlas(expires_in=expires_in))
    start = h.clock.now
    assert await h.get() == 200

    h.clock.now = start + still_cached
    assert await h.get() == 200
    assert len(h.atlas.token_requests) == 1

    h.clock.now = start + renewed
    assert list(await asyncio.gather(h.get(), h.get(), h.get())) == [200, 200, 200]
    assert len(h.atlas.token_requests) == 2
    assert h.atlas.api_authorizations[-3:] == ["Bearer token-2"] * 3
    assert [line["reason"] for line in login_events(logs)] == ["initial", "renewal"]


async def test_a_rejected_token_is_replaced_and_the_request_sent_once_more(
    harness: MakeHarness, logs: Logs
) -> None:
    h = await harness()
    assert await h.get() == 200
    h.atlas.revoke_all()

    assert await h.get() == 200

    assert h.atlas.api_authorizations == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    assert len(h.atlas.token_requests) == 2
    assert [status for _, _, status in h.observed] == ["200", "401", "200"]
    assert [line["reason"] for line in login_events(logs)] == ["initial", "token rejected"]


async def test_concurrent_rejections_share_one_new_login(harness: MakeHarness) -> None:
    h = await harness()
    assert await h.get() == 200
    h.atlas.revoke_all()

    assert await asyncio.gather(*(h.get() for _ in range(20))) == [200] * 20

    assert len(h.atlas.token_requests) == 2
    assert h.atlas.api_authorizations[1:].count("Bearer token-2") == 20


async def test_a_second_401_is_the_answer(harness: MakeHarness) -> None:
    h = await harness(FakeAtlas(reject_all=True))

    # A token obtained for this very request is not replaced: Atlas just refuses it.
    assert await h.get() == 401
    assert len(h.atlas.token_requests) == 1
    assert h.api_calls == 1

    # A cached one is, once: the second 401 is returned as it came.
    assert await h.get() == 401
    assert len(h.atlas.token_requests) == 2
    assert h.atlas.api_authorizations == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> TokenReply:
    async def answer() -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return answer


@pytest.mark.parametrize(
    ("answer", "error_type", "message"),
    [
        (
            reply(401, {"error": "invalid_client", "error_description": "Invalid credentials"}),
            AtlasAuthError,
            "401 invalid_client: service account login refused: Invalid credentials",
        ),
        (
            reply(400, {"error": "unsupported_grant_type"}),
            AtlasAuthError,
            "400 unsupported_grant_type: service account login refused",
        ),
        (
            reply(403, {"error": 403, "reason": "Forbidden", "detail": "IP not on access list"}),
            AtlasAuthError,
            "403: service account login refused: IP not on access list",
        ),
        (
            reply(404, "<html>nothing here</html>"),
            AtlasRequestError,
            "404: service account login failed: <html>nothing here</html>",
        ),
        (
            reply(429, {"error": 429, "detail": "slow down"}, {"Retry-After": "7"}),
            AtlasRateLimitedError,
            "429: service account login throttled: slow down",
        ),
        (
            reply(503, "upstream unavailable"),
            AtlasServerError,
            "503: service account login failed: upstream unavailable",
        ),
        (
            reply(200, "<html>a portal</html>"),
            AtlasBadResponseError,
            "service account login: answer is not JSON (content type 'text/plain; charset=utf-8')",
        ),
        (
            reply(200, ["token-1"]),
            AtlasBadResponseError,
            "service account login: expected a JSON object, got list",
        ),
        (
            reply(200, {"expires_in": 3600, "token_type": "Bearer"}),
            AtlasBadResponseError,
            "service account login: access_token is missing or not a non-empty string",
        ),
        (
            reply(200, {"access_token": "token-1\r\nX: y", "expires_in": 3600}),
            AtlasBadResponseError,
            "service account login: access_token holds characters a header cannot carry",
        ),
        (
            reply(200, {"access_token": "token-1", "expires_in": 3600, "token_type": "mac"}),
            AtlasBadResponseError,
            "service account login: token_type is not Bearer",
        ),
        *(
            (
                reply(200, {"access_token": "token-1", **expiry}),
                AtlasBadResponseError,
                "service account login: expires_in is missing or not a positive number",
            )
            for expiry in (
                {},
                {"expires_in": 0},
                {"expires_in": -5},
                {"expires_in": "3600"},
                {"expires_in": True},
                {"expires_in": None},
            )
        ),
        (
            reply(302, "", {"Location": "https://elsewhere.test/login"}),
            AtlasBadResponseError,
            "service account login: unexpected HTTP 302 (location: https://elsewhere.test/login)",
        ),
    ],
)
async def test_a_failed_login_is_a_client_error_naming_the_cause(
    harness: MakeHarness,
    logs: Logs,
    answer: TokenReply,
    error_type: type[AtlasError],
    message: str,
) -> None:
    h = await harness(FakeAtlas(token_replies=[answer]))

    with pytest.raises(error_type) as caught:
        await h.get()

    error = caught.value
    assert type(error) is error_type
    assert (error.method, error.path, error.summary) == ("POST", TOKEN_PATH, message)
    assert str(error) == f"POST {TOKEN_PATH}: {message}"
    if isinstance(error, AtlasRateLimitedError):
        assert error.retry_after == 7
    assert h.api_calls == 0
    assert login_events(logs) == []
    assert_no_secrets(repr(error), repr(h.login), logs)


@pytest.mark.parametrize("echoed", ["s3cr/t+x", "s3cr%2Ft%2Bx"])
async def test_a_refusal_that_echoes_the_secret_does_not_repeat_it(
    harness: MakeHarness, echoed: str
) -> None:
    """Whether the server echoes the secret as it was sent (form-encoded) or decoded."""
    answer = reply(401, {"error": "invalid_client", "error_description": f"bad {echoed}"})
    h = await harness(FakeAtlas(token_replies=[answer]), client_secret="s3cr/t+x")

    with pytest.raises(AtlasAuthError) as caught:
        await h.get()

    assert caught.value.detail == "service account login refused: bad **********"
    assert "s3cr" not in str(caught.value)


async def test_one_failed_login_fails_every_request_waiting_for_it(harness: MakeHarness) -> None:
    gate = asyncio.Event()
    h = await harness(FakeAtlas(token_replies=[reply(500, "down")], token_gate=gate))

    waiting = [asyncio.ensure_future(h.get()) for _ in range(10)]
    await h.atlas.token_arrived.wait()
    gate.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)

    assert all(isinstance(outcome, AtlasServerError) for outcome in outcomes)
    assert len(h.atlas.token_requests) == 1
    # The next request logs in again, and this time it works.
    assert await h.get() == 200
    assert len(h.atlas.token_requests) == 2


async def test_a_token_endpoint_nobody_listens_on_is_unreachable(harness: MakeHarness) -> None:
    nowhere = f"http://127.0.0.1:{unused_port()}"
    h = await harness(url=token_url(nowhere))

    with pytest.raises(AtlasUnreachableError) as caught:
        await h.session.get(nowhere + API_PATH)

    error = caught.value
    assert (error.method, error.path, error.request_sent) == ("POST", TOKEN_PATH, False)
    assert error.summary.startswith("service account login: cannot connect: ")
    assert h.api_calls == 0


async def test_a_token_endpoint_that_does_not_answer_times_out(harness: MakeHarness) -> None:
    # (In AtlasClient the request's own total timeout, which includes its login, is the
    # same length and started first: there the request's timeout is the one that fires.)
    h = await harness(FakeAtlas(token_gate=asyncio.Event()), login_timeout=0.2)

    with pytest.raises(AtlasUnreachableError) as caught:
        await h.get()

    error = caught.value
    assert (error.path, error.request_sent) == (TOKEN_PATH, True)
    assert error.summary == "service account login: no answer within 0.2 s"


async def test_other_origins_get_no_token(harness: MakeHarness) -> None:
    h = await harness()
    other = await harness()

    async with h.session.get(other.base_url + API_PATH) as response:
        assert response.status == 401

    assert other.atlas.api_authorizations == [None]
    assert h.atlas.token_requests == []


async def test_neither_secret_nor_token_shows(harness: MakeHarness, logs: Logs) -> None:
    h = await harness()
    assert await h.get() == 200
    h.atlas.revoke_all()
    assert await h.get() == 200

    assert repr(h.login) == (
        f"ServiceAccountLogin(token_url='{h.base_url}{TOKEN_PATH}', client_id='{CLIENT_ID}')"
    )
    assert_no_secrets(repr(h.login), json.dumps(logs), repr(h.login._token))
    assert len(login_events(logs)) == 2


def test_an_empty_client_id_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="client id") as caught:
        ServiceAccountLogin(
            token_url="https://cloud.mongodb.com/api/oauth/token",
            client_id="",
            client_secret=SecretStr(CLIENT_SECRET),
            timeout=aiohttp.ClientTimeout(total=5),
        )
    assert_no_secrets(caught.value)


def test_token_url_is_at_the_host_root() -> None:
    assert token_url("https://cloud.mongodb.com/") == "https://cloud.mongodb.com/api/oauth/token"


@pytest.mark.parametrize("first", ["monitor.atlas.oauth", "monitor.atlas"])
def test_either_module_imports_first_without_a_cycle(first: str) -> None:
    code = f"import {first}; import monitor.atlas.oauth, monitor.atlas"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
