"""A fake MongoDB Atlas Admin API v1.0 for demos, tests and benchmarks.

It serves the three interface-endpoint routes the monitor uses, behind the same strict
Digest authentication, error bodies and headers as real Atlas, so the monitor's client is
exercised exactly as in production. Everything time-dependent (status progression, scripted
timelines, nonce staleness, rate-limit refill) is computed lazily from an injected clock, and
fault latency uses an injected sleep, so tests control time instead of waiting for it.

Scenario file (YAML, or JSON since the YAML parser reads both)::

    step_seconds: 10              # how long each status lasts after a POST or a DELETE
    nonce_lifetime_seconds: 300   # older nonces are answered 401 with stale=true
    rate_limit_per_minute: null   # per-groupId token bucket; null = unlimited, no headers
    endpoints:
      - group_id: "5e2211c17a3e5a48f5497de3"        # 24 hex digits
        private_link_id: "5e3a1b2c7a3e5a48f5497de4" # 24 hex digits
        interface_endpoint_id: vpce-0b9c5701325cb15dd
        exists: true              # false = 404 until POSTed
        status: AVAILABLE         # any string, even outside Atlas' list
        error_message: null
        delete_requested: false
        timeline:                 # seconds since the simulator started; a step changes
          - after_seconds: 60     # exactly the fields it names
            status: REJECTED
        faults:                   # each request uses up one of the first fault whose
          - methods: [GET]        # methods match (default: all) and that has uses left
            times: 1              # default null = forever
            status: 503           # answered with an Atlas error body
            retry_after: 5        # Retry-After header, on any answer
          - latency_seconds: 0.5  # awaited before answering
            times: 1
          - drop_connection: true # close the connection without any answer
            times: 2
          - body: '{"interfaceEndpointId": '  # sent verbatim; status 200 unless given
            content_type: application/json
          - truncate_body: true   # the answer's headers (full Content-Length) and half
            times: 1              # its body, then the connection closes

Unauthenticated control routes, for tests that run the simulator in another process (they
are not counted in the stats):

- ``GET /_simulator/stats``: ``SimulatorStats.as_json()``
- ``PUT /_simulator/endpoints/{groupId}/{privateLinkId}/{interfaceEndpointId}`` with
  ``{"status", "error_message", "delete_requested"}``: ``Simulator.set_endpoint``
- ``DELETE`` on the same path: ``Simulator.remove_endpoint``
- ``POST`` on that path plus ``/faults`` with a fault as JSON: ``Simulator.add_fault``
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.resources
import json
import math
import pathlib
import re
import secrets
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from http import HTTPStatus
from typing import Annotated, Any, Literal, NamedTuple, Self

import structlog
import yaml
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.atlas import API_ROOT, INTERFACE_ENDPOINT_ID, OBJECT_ID

__all__ = [
    "API_ROOT",
    "Fault",
    "Scenario",
    "ScenarioEndpoint",
    "ScenarioError",
    "Simulator",
    "SimulatorStats",
    "TimelineStep",
    "default_scenario",
    "load_scenario",
]

log = structlog.get_logger(__name__)

REALM = "MMS Public API"
UNAUTHORIZED_BODY = {
    "error": 401,
    "reason": "Unauthorized",
    "detail": "You are not authorized for this resource.",
}
# Status recorded in SimulatorStats when the client got no HTTP response at all.
DROPPED = 0
# Past this many outstanding challenges the oldest nonces are forgotten, so a flood of
# unauthenticated requests cannot grow memory without bound.
_NONCE_CAPACITY = 10_000
_PROVISIONING_STATUSES = ("PENDING_ACCEPTANCE", "PENDING", "AVAILABLE")
_ATLAS_ERROR_CODES = {
    HTTPStatus.FORBIDDEN: "IP_ADDRESS_NOT_ON_ACCESS_LIST",
    HTTPStatus.NOT_FOUND: "RESOURCE_NOT_FOUND",
    HTTPStatus.TOO_MANY_REQUESTS: "RATE_LIMITED",
}
_ENDPOINT_COLLECTION = "/groups/{groupId}/privateEndpoint/{privateLinkId}/interfaceEndpoints"
_ENDPOINT_RESOURCE = _ENDPOINT_COLLECTION + "/{interfaceEndpointId}"
_CONTROL_ENDPOINT = "/_simulator/endpoints/{groupId}/{privateLinkId}/{interfaceEndpointId}"


@dataclass(frozen=True)
class _IdFormat:
    pattern: re.Pattern[str]
    description: str

    def matches(self, value: str) -> bool:
        return self.pattern.fullmatch(value) is not None

    def check(self, value: str) -> str:
        """Pydantic validator form, so scenario files and paths share one definition."""
        if not self.matches(value):
            raise ValueError(f"must be {self.description}, got {value!r}")
        return value


_OBJECT_ID = _IdFormat(OBJECT_ID, "24 hexadecimal digits")
_INTERFACE_ENDPOINT_ID = _IdFormat(
    INTERFACE_ENDPOINT_ID, "'vpce-' followed by 8 or 17 lowercase hexadecimal digits"
)
_PATH_ID_FORMATS = {
    "groupId": _OBJECT_ID,
    "privateLinkId": _OBJECT_ID,
    "interfaceEndpointId": _INTERFACE_ENDPOINT_ID,
}
ObjectId = Annotated[str, AfterValidator(_OBJECT_ID.check)]
InterfaceEndpointId = Annotated[str, AfterValidator(_INTERFACE_ENDPOINT_ID.check)]


class ScenarioError(Exception):
    """A scenario that cannot be used; ``problems`` holds one ``path.to.field: problem`` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _describe_validation_error(error: ValidationError) -> list[str]:
    """Flatten pydantic's nested locations so operators can find the field in their file."""
    problems = []
    for detail in error.errors():
        context = detail.get("ctx", {})
        message = str(context["error"]) if "error" in context else detail["msg"]
        location = ".".join(str(part) for part in detail["loc"])
        problems.append(f"{location}: {message}" if location else message)
    return problems


def _standard_http_status(value: int) -> int:
    """Fault answers need a reason phrase and a default errorCode, so only known codes."""
    try:
        HTTPStatus(value)
    except ValueError:
        raise ValueError(f"{value} is not a standard HTTP status code") from None
    return value


class Fault(BaseModel):
    """A scripted misbehaviour for requests that reach one endpoint.

    A fault that names nothing but ``methods``/``times`` lets matching requests through
    untouched; placed first in a list it delays the faults behind it by ``times`` requests.

    aiohttp clients resend a GET or DELETE once when the server drops the connection, so a
    client only sees a dropped GET when ``times`` is at least 2 (or unlimited).
    """

    model_config = ConfigDict(extra="forbid")

    methods: list[Literal["GET", "POST", "DELETE"]] = Field(
        default=["GET", "POST", "DELETE"], min_length=1
    )
    times: int | None = Field(default=None, ge=1)
    latency_seconds: float = Field(default=0, ge=0)
    status: Annotated[int, AfterValidator(_standard_http_status)] | None = Field(
        default=None, ge=200, le=599
    )
    error_code: str | None = None
    retry_after: int | None = Field(default=None, ge=0)
    drop_connection: bool = False
    truncate_body: bool = False
    """Send the answer's headers and half its body, then close the connection."""
    body: str | None = None
    content_type: str = "application/json"

    @model_validator(mode="after")
    def _check_combination(self) -> Self:
        named = self.model_fields_set
        if self.drop_connection:
            answer_fields = sorted(
                named
                & {"status", "error_code", "retry_after", "body", "content_type", "truncate_body"}
            )
            if answer_fields:
                raise ValueError(
                    "drop_connection sends no answer, so it cannot be combined with "
                    + ", ".join(answer_fields)
                )
        if self.body is None:
            if "content_type" in named:
                raise ValueError("content_type only applies to a raw body")
            if self.status is not None and self.status < HTTPStatus.BAD_REQUEST:
                raise ValueError("a status below 400 needs a raw body")
            if self.error_code is not None and self.status is None:
                raise ValueError("error_code needs a status")
        elif self.error_code is not None:
            raise ValueError("error_code cannot be combined with a raw body")
        return self


class TimelineStep(BaseModel):
    """A scripted change ``after_seconds`` after the simulator started.

    A step changes exactly the fields it names, so ``error_message: null`` clears a message
    while leaving it out keeps the current one.
    """

    model_config = ConfigDict(extra="forbid")

    after_seconds: float = Field(ge=0)
    status: str | None = None
    error_message: str | None = None
    delete_requested: bool | None = None
    exists: bool | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"after_seconds"})

    @model_validator(mode="after")
    def _check_changes(self) -> Self:
        changes = self.changes()
        if not changes:
            raise ValueError(
                "a step must change at least one of status, error_message, delete_requested, exists"
            )
        nulls = sorted(
            name for name, value in changes.items() if value is None and name != "error_message"
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave it out to keep it")
        return self


class EndpointKey(NamedTuple):
    group_id: str
    private_link_id: str
    interface_endpoint_id: str


class _EndpointRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_id: ObjectId
    private_link_id: ObjectId
    interface_endpoint_id: InterfaceEndpointId

    def key(self) -> EndpointKey:
        return EndpointKey(self.group_id, self.private_link_id, self.interface_endpoint_id)


class ScenarioEndpoint(_EndpointRef):
    """An endpoint's state when the simulator starts, its timeline and its faults."""

    exists: bool = True
    status: str = "AVAILABLE"
    error_message: str | None = None
    delete_requested: bool = False
    timeline: list[TimelineStep] = []
    faults: list[Fault] = []

    @field_validator("timeline")
    @classmethod
    def _in_time_order(cls, steps: list[TimelineStep]) -> list[TimelineStep]:
        """Stable, so steps at the same instant apply in file order."""
        return sorted(steps, key=lambda step: step.after_seconds)


class Scenario(BaseModel):
    """Everything the simulator serves when it starts."""

    model_config = ConfigDict(extra="forbid")

    step_seconds: float = Field(default=10, gt=0)
    nonce_lifetime_seconds: float = Field(default=300, gt=0)
    rate_limit_per_minute: int | None = Field(default=None, gt=0)
    endpoints: list[ScenarioEndpoint] = []

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, endpoints: list[ScenarioEndpoint]) -> list[ScenarioEndpoint]:
        first_index: dict[EndpointKey, int] = {}
        duplicates = []
        for index, endpoint in enumerate(endpoints):
            first = first_index.setdefault(endpoint.key(), index)
            if first != index:
                duplicates.append(
                    f"entry {index} repeats entry {first} ({'/'.join(endpoint.key())})"
                )
        if duplicates:
            raise ValueError("; ".join(duplicates))
        return endpoints


def _parse_scenario(content: bytes, source: str) -> Scenario:
    """Bytes, so the YAML reader detects the encoding and reports bad bytes with a position."""
    try:
        document = yaml.safe_load(content)
    except yaml.YAMLError as error:
        raise ScenarioError([f"{source}: not valid YAML or JSON: {error}"]) from error
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise ScenarioError([f"{source}: a scenario must be a mapping, this one is {kind}"])
    try:
        return Scenario.model_validate(document)
    except ValidationError as error:
        raise ScenarioError(_describe_validation_error(error)) from error


def load_scenario(path: str | pathlib.Path) -> Scenario:
    """Read a YAML or JSON scenario file; every problem is reported at once."""
    path = pathlib.Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ScenarioError([f"{path}: cannot read scenario file: {reason}"]) from error
    return _parse_scenario(content, str(path))


def default_scenario() -> Scenario:
    """The demo scenario shipped in the package, whose ids the demo config refers to."""
    resource = importlib.resources.files("monitor.resources").joinpath("demo-scenario.yaml")
    return _parse_scenario(resource.read_bytes(), str(resource))


@dataclass
class SimulatorStats:
    """What the simulator was asked, for tests and benchmarks to assert request budgets."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(method, status) of every API request; status 0 when no response was sent."""
    challenges: int = 0
    """401 answers caused by a missing, invalid or stale Authorization header."""
    by_endpoint: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(method, interfaceEndpointId) of requests that got past auth, ids and rate limit."""

    def total(self) -> int:
        return sum(self.requests.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total(),
            "challenges": self.challenges,
            "requests": _nest(self.requests.items()),
            "by_endpoint": _nest(self.by_endpoint.items()),
        }


def _nest(counts: Iterable[tuple[tuple[str, object], int]]) -> dict[str, dict[str, int]]:
    """JSON objects need string keys, so (a, b) -> count becomes {a: {b: count}}."""
    nested: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for (outer, inner), count in counts:
        nested[outer][str(inner)] = count
    return dict(nested)


@dataclass(frozen=True)
class _EndpointState:
    exists: bool
    status: str
    error_message: str | None
    delete_requested: bool


@dataclass(frozen=True)
class _EndpointScript:
    """An endpoint's state as a function of time, so progression needs no background task."""

    initial: _EndpointState
    started_at: float
    steps: Sequence[TimelineStep] = ()

    def state_at(self, now: float) -> _EndpointState:
        state = self.initial
        for step in self.steps:
            if step.after_seconds > now - self.started_at:
                break
            state = replace(state, **step.changes())
        return state


@dataclass
class _ArmedFault:
    fault: Fault
    remaining: int | None


@dataclass
class _TokenBucket:
    per_minute: int
    tokens: float
    updated_at: float

    def take(self, now: float) -> bool:
        refill = (now - self.updated_at) * self.per_minute / 60
        self.tokens = min(self.per_minute, self.tokens + refill)
        self.updated_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def seconds_until_token(self) -> int:
        return max(1, math.ceil((1 - self.tokens) * 60 / self.per_minute))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.per_minute),
            "RateLimit-Remaining": str(math.floor(self.tokens)),
        }


class _NonceRegistry:
    """Nonces this simulator issued, with issue times, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._issued_at: OrderedDict[str, float] = OrderedDict()

    def issue(self, now: float) -> str:
        nonce = secrets.token_hex(16)
        self._issued_at[nonce] = now
        while len(self._issued_at) > self._capacity:
            self._issued_at.popitem(last=False)
        return nonce

    def issued_at(self, nonce: str) -> float | None:
        return self._issued_at.get(nonce)


@dataclass(frozen=True)
class _DigestCredentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    qop: str
    nc: str
    cnonce: str
    algorithm: str


_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
_REQUIRED_DIGEST_FIELDS = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")


def _parse_digest_authorization(header: str) -> _DigestCredentials | None:
    """None unless the header is a Digest answer carrying every field qop=auth requires."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "digest":
        return None
    fields = {
        match[1].lower(): re.sub(r"\\(.)", r"\1", match[2]) if match[2] is not None else match[3]
        for match in _AUTH_PARAM.finditer(params)
    }
    if not all(name in fields for name in _REQUIRED_DIGEST_FIELDS):
        return None
    return _DigestCredentials(
        algorithm=fields.get("algorithm", "MD5"),  # RFC 7616: absent means MD5
        **{name: fields[name] for name in _REQUIRED_DIGEST_FIELDS},
    )


def _md5_hex(text: str) -> str:
    """Digest auth mandates MD5; surrogateescape keeps odd client bytes from raising."""
    data = text.encode("utf-8", "surrogateescape")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _digest_response(credentials: _DigestCredentials, *, method: str, password: str) -> str:
    """RFC 7616 response for algorithm MD5 and qop auth."""
    ha1 = _md5_hex(f"{credentials.username}:{credentials.realm}:{password}")
    ha2 = _md5_hex(f"{method}:{credentials.uri}")
    c = credentials
    return _md5_hex(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}")


def _digest_is_valid(
    credentials: _DigestCredentials,
    *,
    method: str,
    request_uri: str,
    username: str,
    password: str,
) -> bool:
    """Everything but the nonce, which only the simulator's registry can vouch for."""
    if (
        credentials.username != username
        or credentials.realm != REALM
        or credentials.algorithm.upper() != "MD5"
        or credentials.qop != "auth"
        or credentials.uri != request_uri
    ):
        return False
    expected = _digest_response(credentials, method=method, password=password)
    return hmac.compare_digest(
        expected.encode(), credentials.response.encode("utf-8", "surrogateescape")
    )


def _challenge_header(nonce: str, *, stale: bool) -> str:
    return (
        f'Digest realm="{REALM}", domain="", nonce="{nonce}", algorithm=MD5, qop="auth", '
        f"stale={str(stale).lower()}"
    )


class _AuthVerdict(Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    STALE = "stale"


def _query_flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


def _json_response(
    request: web.Request,
    status: int,
    payload: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Atlas' output: compact JSON unless pretty=true, wrapped when envelope=true."""
    document: Mapping[str, Any] = payload
    if _query_flag(request, "envelope"):
        document = {"status": status, "content": payload}
    if _query_flag(request, "pretty"):
        text = json.dumps(document, indent=2)
    else:
        text = json.dumps(document, separators=(",", ":"))
    return web.Response(
        status=status, body=text.encode(), content_type="application/json", headers=headers
    )


def _default_error_code(status: int) -> str:
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return "UNEXPECTED_ERROR"
    return _ATLAS_ERROR_CODES.get(HTTPStatus(status), HTTPStatus(status).name)


class _AtlasError(Exception):
    """Ends request handling with an Atlas error body; rendered by the API middleware."""

    def __init__(
        self,
        status: int,
        error_code: str,
        detail: str,
        parameters: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error_code = error_code
        self.detail = detail
        self.parameters = list(parameters)
        self.headers = headers

    def response(self, request: web.Request) -> web.Response:
        body = {
            "error": self.status,
            "errorCode": self.error_code,
            "detail": self.detail,
            "reason": HTTPStatus(self.status).phrase,
            "parameters": self.parameters,
        }
        return _json_response(request, self.status, body, self.headers)


def _check_path_ids(request: web.Request) -> None:
    invalid = [
        name
        for name, value in request.match_info.items()
        if name in _PATH_ID_FORMATS and not _PATH_ID_FORMATS[name].matches(value)
    ]
    if invalid:
        raise _AtlasError(
            HTTPStatus.BAD_REQUEST,
            "PATH_PARAM_PARSE_ERROR",
            "One or more path parameters could not be parsed: " + ", ".join(invalid) + ".",
            invalid,
        )


def _invalid_attribute(name: str) -> _AtlasError:
    return _AtlasError(
        HTTPStatus.BAD_REQUEST, "INVALID_ATTRIBUTE", f"Invalid attribute {name} specified.", [name]
    )


async def _interface_endpoint_id_from_body(request: web.Request) -> str:
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise _AtlasError(
            HTTPStatus.BAD_REQUEST, "INVALID_JSON", "Received JSON is malformed."
        ) from None
    if not isinstance(body, dict):
        raise _AtlasError(
            HTTPStatus.BAD_REQUEST,
            "INVALID_JSON",
            "Received JSON does not match the expected format.",
        )
    unknown = sorted(set(body) - {"interfaceEndpointId"})
    if unknown:
        raise _invalid_attribute(unknown[0])
    if "interfaceEndpointId" not in body:
        raise _AtlasError(
            HTTPStatus.BAD_REQUEST,
            "MISSING_ATTRIBUTE",
            "The required attribute interfaceEndpointId was not specified.",
            ["interfaceEndpointId"],
        )
    interface_endpoint_id = body["interfaceEndpointId"]
    if not isinstance(interface_endpoint_id, str) or not _INTERFACE_ENDPOINT_ID.matches(
        interface_endpoint_id
    ):
        raise _invalid_attribute("interfaceEndpointId")
    return interface_endpoint_id


def _atlas_body(interface_endpoint_id: str, state: _EndpointState) -> dict[str, Any]:
    return {
        "interfaceEndpointId": interface_endpoint_id,
        "connectionStatus": state.status,
        "errorMessage": state.error_message,
        "deleteRequested": state.delete_requested,
    }


def _fault_answer(request: web.Request, fault: Fault) -> web.Response | None:
    """The answer a fault replaces the real one with, or None to answer normally."""
    if fault.body is not None:
        return web.Response(
            status=HTTPStatus.OK if fault.status is None else fault.status,
            body=fault.body.encode(),
            headers={hdrs.CONTENT_TYPE: fault.content_type},
        )
    if fault.status is None:
        return None
    error = _AtlasError(
        fault.status,
        fault.error_code or _default_error_code(fault.status),
        f"Simulated fault for {request.method} {request.path}.",
    )
    return error.response(request)


async def _send_truncated(request: web.Request, answer: web.Response) -> web.StreamResponse:
    """The answer's status and headers, announcing its whole length, then half its body and
    a closed connection: what a client sees when a connection is reset mid-body."""
    body = answer.body
    assert isinstance(body, bytes)
    response = web.StreamResponse(status=answer.status, reason=answer.reason)
    response.headers.update(answer.headers)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    request.protocol.force_close()
    return response


class _EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = None
    error_message: str | None = None
    delete_requested: bool = False


class Simulator:
    """The fake Atlas API as an aiohttp application plus methods to steer it from tests."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        public_key: str,
        private_key: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.scenario = scenario
        self.stats = SimulatorStats()
        self._public_key = public_key
        self._private_key = private_key
        self._clock = clock
        self._sleep = sleep
        self._nonces = _NonceRegistry(_NONCE_CAPACITY)
        self._buckets: dict[str, _TokenBucket] = {}
        self._scripts: dict[EndpointKey, _EndpointScript] = {}
        self._faults: defaultdict[EndpointKey, list[_ArmedFault]] = defaultdict(list)
        started_at = clock()
        for endpoint in scenario.endpoints:
            initial = _EndpointState(
                exists=endpoint.exists,
                status=endpoint.status,
                error_message=endpoint.error_message,
                delete_requested=endpoint.delete_requested,
            )
            self._scripts[endpoint.key()] = _EndpointScript(initial, started_at, endpoint.timeline)
            for fault in endpoint.faults:
                self._arm(endpoint.key(), fault)
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
    ) -> None:
        """Pin an endpoint to a fixed state, ending any timeline or progression it had.

        ``status=None`` keeps the current status of an existing endpoint and gives a new one
        NONE, so a test can set only the error message. Raises ValueError for malformed ids.
        """
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id)
        if status is None:
            current = self._current_state(key)
            status = "NONE" if current is None else current.status
        state = _EndpointState(
            exists=True,
            status=status,
            error_message=error_message,
            delete_requested=delete_requested,
        )
        self._scripts[key] = _EndpointScript(state, self._clock())
        log.info("simulator_endpoint_set", **key._asdict(), status=status)

    def remove_endpoint(
        self, group_id: str, private_link_id: str, interface_endpoint_id: str
    ) -> None:
        """Make the endpoint answer 404 until it is set or POSTed again."""
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id)
        self._scripts.pop(key, None)
        log.info("simulator_endpoint_removed", **key._asdict())

    def add_fault(
        self, group_id: str, private_link_id: str, interface_endpoint_id: str, fault: Fault
    ) -> None:
        """Append a fault behind the endpoint's existing ones; it may exist or not."""
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id)
        self._arm(key, fault)
        log.info("simulator_fault_added", **key._asdict(), fault=fault.model_dump(mode="json"))

    def endpoint_state(
        self, group_id: str, private_link_id: str, interface_endpoint_id: str
    ) -> dict[str, Any] | None:
        """The body a GET would answer now, or None where it would answer 404."""
        key = _endpoint_key(group_id, private_link_id, interface_endpoint_id)
        state = self._current_state(key)
        return None if state is None else _atlas_body(interface_endpoint_id, state)

    def _arm(self, key: EndpointKey, fault: Fault) -> None:
        self._faults[key].append(_ArmedFault(fault, remaining=fault.times))

    def _current_state(self, key: EndpointKey) -> _EndpointState | None:
        script = self._scripts.get(key)
        if script is None:
            return None
        state = script.state_at(self._clock())
        return state if state.exists else None

    def _build_app(self) -> web.Application:
        api = web.Application(middlewares=[self._api_middleware])
        api.router.add_get(_ENDPOINT_RESOURCE, self._handle_get, allow_head=False)
        api.router.add_delete(_ENDPOINT_RESOURCE, self._handle_delete)
        api.router.add_post(_ENDPOINT_COLLECTION, self._handle_post)
        app = web.Application()
        app.router.add_get("/_simulator/stats", self._control_stats)
        app.router.add_put(_CONTROL_ENDPOINT, self._control_set_endpoint)
        app.router.add_delete(_CONTROL_ENDPOINT, self._control_remove_endpoint)
        app.router.add_post(_CONTROL_ENDPOINT + "/faults", self._control_add_fault)
        app.add_subapp(API_ROOT, api)
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
        verdict = self._authenticate(request)
        if verdict is not _AuthVerdict.ACCEPTED:
            return self._challenge(request, stale=verdict is _AuthVerdict.STALE)
        rate_limit_headers: dict[str, str] = {}
        try:
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
        credentials = _parse_digest_authorization(request.headers.get(hdrs.AUTHORIZATION, ""))
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

    async def _answer_with_faults(
        self,
        request: web.Request,
        key: EndpointKey,
        answer: Callable[[web.Request, EndpointKey], web.Response],
    ) -> web.StreamResponse:
        self.stats.by_endpoint[(request.method, key.interface_endpoint_id)] += 1
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

    def _read(self, request: web.Request, key: EndpointKey) -> web.Response:
        state = self._current_state(key)
        if state is None:
            return _not_found(request).response(request)
        return _json_response(request, HTTPStatus.OK, _atlas_body(key.interface_endpoint_id, state))

    def _create(self, request: web.Request, key: EndpointKey) -> web.Response:
        if self._current_state(key) is not None:
            conflict = _AtlasError(
                HTTPStatus.CONFLICT,
                "INTERFACE_ENDPOINT_ALREADY_EXISTS",
                f"Interface endpoint {key.interface_endpoint_id} already exists.",
                [key.interface_endpoint_id],
            )
            return conflict.response(request)
        step = self.scenario.step_seconds
        state = _EndpointState(
            exists=True, status="NONE", error_message=None, delete_requested=False
        )
        progression = [
            TimelineStep(after_seconds=step * number, status=status)
            for number, status in enumerate(_PROVISIONING_STATUSES, start=1)
        ]
        self._scripts[key] = _EndpointScript(state, self._clock(), progression)
        log.info("simulator_endpoint_created", **key._asdict())
        return _json_response(
            request, HTTPStatus.CREATED, _atlas_body(key.interface_endpoint_id, state)
        )

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
            key = _control_key(request)
            update = _EndpointUpdate.model_validate_json(await request.read())
        except ValidationError as error:
            return _control_error(error)
        self.set_endpoint(*key, **update.model_dump())
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _control_remove_endpoint(self, request: web.Request) -> web.Response:
        try:
            key = _control_key(request)
        except ValidationError as error:
            return _control_error(error)
        self.remove_endpoint(*key)
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        try:
            key = _control_key(request)
            fault = Fault.model_validate_json(await request.read())
        except ValidationError as error:
            return _control_error(error)
        self.add_fault(*key, fault)
        return web.Response(status=HTTPStatus.NO_CONTENT)


def _endpoint_key(group_id: str, private_link_id: str, interface_endpoint_id: str) -> EndpointKey:
    return _EndpointRef(
        group_id=group_id,
        private_link_id=private_link_id,
        interface_endpoint_id=interface_endpoint_id,
    ).key()


def _path_key(request: web.Request) -> EndpointKey:
    """Only for API routes, whose ids the middleware has already checked."""
    match = request.match_info
    return EndpointKey(match["groupId"], match["privateLinkId"], match["interfaceEndpointId"])


def _control_key(request: web.Request) -> EndpointKey:
    match = request.match_info
    return _endpoint_key(match["groupId"], match["privateLinkId"], match["interfaceEndpointId"])


def _not_found(request: web.Request) -> _AtlasError:
    return _AtlasError(
        HTTPStatus.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        f"Cannot find resource {request.path}.",
        [request.path],
    )


def _control_error(error: ValidationError) -> web.Response:
    message = "\n".join(_describe_validation_error(error))
    status = HTTPStatus.BAD_REQUEST
    return web.json_response({"error": status, "detail": message}, status=status)
