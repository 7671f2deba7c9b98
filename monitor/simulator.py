"""A fake MongoDB Atlas Admin API (v1.0 and v2) for demos, tests and benchmarks.

It serves the interface-endpoint routes of v1.0 and the private-endpoint routes of v2 the
monitor uses, behind the same strict Digest authentication (or a service account's Bearer
token), error bodies and headers as real Atlas, so the monitor's client is exercised exactly
as in production. Everything time-dependent (status progression, scripted timelines, nonce
staleness, token expiry, rate-limit refill) is computed lazily from an injected clock, and
fault latency uses an injected sleep, so tests control time instead of waiting for it.

v1.0, under ``/api/atlas/v1.0`` (AWS endpoints only; an Azure or GCP endpoint is not visible
here), ``Accept`` is ignored and answers are ``application/json``:

- ``GET|DELETE /groups/{groupId}/privateEndpoint/{privateLinkId}/interfaceEndpoints/{vpceId}``
- ``POST /groups/{groupId}/privateEndpoint/{privateLinkId}/interfaceEndpoints``
  with ``{"interfaceEndpointId"}``; then NONE, PENDING_ACCEPTANCE, PENDING, AVAILABLE.

v2, under ``/api/atlas/v2``, with ``{P}`` one of ``AWS``, ``AZURE``, ``GCP`` (anything else is
400 INVALID_ENUM_VALUE), held to Atlas' published spec (tests/data/atlas-spec-excerpt.yaml).
``Accept: application/vnd.atlas.<date>+json`` is required: each route has one resource
version, 2023-01-01, served for that date or any later one (the spec's own examples send
2025-03-12), and typed ``application/vnd.atlas.2023-01-01+json;charset=utf-8``; no versioned
Accept, an earlier or malformed date is 406 INVALID_VERSION_DATE. Errors are
``application/json`` with the errorCode repeated in an ``X-Error-Code`` header, as Atlas sends
them:

- ``GET /groups/{groupId}/privateEndpoint/{P}/endpointService``: a JSON array of services
- ``GET /groups/{groupId}/privateEndpoint/{P}/endpointService/{serviceId}``: one service,
  listing the ids of its endpoints that currently exist
- ``GET|DELETE .../endpointService/{serviceId}/endpoint/{endpointId}``: one endpoint; the id
  segment is URL-encoded (an Azure resource id arrives with ``%2F``) and is matched on the
  still-encoded path, then decoded once; Azure ids compare case-insensitively
- ``POST .../endpointService/{serviceId}/endpoint`` with a ``Content-Type:
  application/vnd.atlas.<date>+json`` body (else 415 UNSUPPORTED_MEDIA_TYPE): AWS ``{"id"}``,
  AZURE ``{"id", "privateEndpointIPAddress"}`` or GCP ``{"endpointGroupName", "gcpProjectId",
  "endpoints"?}`` (404 when the service does not exist); answered 200, then AWS
  PENDING_ACCEPTANCE, PENDING, AVAILABLE (v2 has no NONE), AZURE INITIATING, AVAILABLE and GCP
  INITIATING, VERIFIED, AVAILABLE, one status per ``step_seconds``

v1.0 and v2 share one endpoint store, one per-group rate limit, the faults, the timelines
and ``by_endpoint`` stats: a fault on an AWS endpoint applies whichever version reads it.
Faults on a POST are keyed by the id in its body (GCP: ``endpointGroupName``).

An AZURE endpoint's ``interface_endpoint_id`` is its resource id, ``/subscriptions/<uuid>/``
``resourceGroups/<group>/providers/Microsoft.Network/privateEndpoints/<name>`` (compared
case-insensitively). Endpoint ids are unique per provider, group and service.
An Azure endpoint's ``privateEndpointIPAddress`` and a GCP endpoint's ``endpoints`` are
derived from the id unless a POST gave them.

Scenario file (YAML, or JSON since the YAML parser reads both)::

    step_seconds: 10              # how long each status lasts after a POST or a DELETE
    nonce_lifetime_seconds: 300   # older nonces are answered 401 with stale=true
    token_lifetime_seconds: 3600  # OAuth access tokens expire after this long
    rate_limit_per_minute: null   # per-groupId token bucket; null = unlimited, no headers
    endpoint_services:            # optional; a service that endpoints name but that is
      - group_id: "5e2211c17a3e5a48f5497de3"  # not listed exists anyway: AVAILABLE, in
        id: "65a1b2c3d4e5f60718293a5c"        # its provider's default region
        cloud_provider: GCP       # AWS (default), AZURE or GCP
        region: CENTRAL_US        # default US_EAST_1, US_EAST_2 or CENTRAL_US by provider
        status: AVAILABLE         # any string; default AVAILABLE
        error_message: null
        timeline:                 # like an endpoint's, with status and error_message only
          - after_seconds: 30
            status: FAILED
            error_message: subnet has network policies enabled
    endpoints:
      - group_id: "5e2211c17a3e5a48f5497de3"        # 24 hex digits
        private_link_id: "5e3a1b2c7a3e5a48f5497de4" # the endpoint service id: 24 hex digits
        cloud_provider: AWS       # default AWS; the id's format follows the provider
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
      - group_id: "5e2211c17a3e5a48f5497de3"
        private_link_id: "65a1b2c3d4e5f60718293a5c"
        cloud_provider: GCP       # id: an endpoint group name, [a-z]([-a-z0-9]{0,61}[a-z0-9])?
        interface_endpoint_id: analytics-psc
        status: INITIATING
        timeline:
          - after_seconds: 30
            status: VERIFIED

Unauthenticated control routes, for tests that run the simulator in another process (they
are not counted in the stats). The endpoint id segment may be URL-encoded (Azure); the
provider follows from the id (``vpce-...`` AWS, ``/subscriptions/...`` AZURE, else GCP) or
from an optional ``?cloud_provider=`` query parameter:

- ``GET /_simulator/stats``: ``SimulatorStats.as_json()``
- ``PUT /_simulator/endpoints/{groupId}/{privateLinkId}/{interfaceEndpointId}`` with
  ``{"status", "error_message", "delete_requested"}``: ``Simulator.set_endpoint``
- ``DELETE`` on the same path: ``Simulator.remove_endpoint``
- ``POST`` on that path plus ``/faults`` with a fault as JSON: ``Simulator.add_fault``
- ``PUT /_simulator/services/{groupId}/{cloudProvider}/{serviceId}`` with
  ``{"status", "error_message"}``: ``Simulator.set_service``

Service-account login (OAuth 2 client credentials), enabled when the simulator has a
``client_id`` and ``client_secret``: ``POST /api/oauth/token`` with ``Authorization: Basic
base64(id:secret)``, id and secret each form-encoded first (RFC 6749 section 2.3.1), and
the form body ``grant_type=client_credentials`` answers
``{"access_token", "expires_in", "token_type": "Bearer"}``; a wrong or absent client (or
OAuth disabled) is 401 ``invalid_client``, another grant type 400 ``unsupported_grant_type``.
API routes of both versions accept a valid Digest answer or ``Authorization: Bearer
<access_token>`` while the token is unexpired; an unknown or expired token is 401 with the
Atlas body and no Digest challenge. Tokens are kept in a bounded, oldest-first registry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hashlib
import hmac
import importlib.resources
import ipaddress
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
from typing import Annotated, Any, Literal, NamedTuple, Protocol, Self, TypeVar
from urllib.parse import unquote_plus

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
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.atlas import (
    API_ROOT,
    AZURE_PRIVATE_ENDPOINT_ID,
    GCP_ENDPOINT_GROUP_NAME,
    INTERFACE_ENDPOINT_ID,
    OBJECT_ID,
)

__all__ = [
    "API_ROOT",
    "API_V2_ROOT",
    "OAUTH_TOKEN_PATH",
    "V2_MEDIA_TYPE",
    "CloudProvider",
    "Fault",
    "Scenario",
    "ScenarioEndpoint",
    "ScenarioError",
    "ScenarioService",
    "ServiceTimelineStep",
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
API_V2_ROOT = "/api/atlas/v2"
OAUTH_TOKEN_PATH = "/api/oauth/token"  # noqa: S105 - a path, not a password
V2_RESOURCE_VERSION = "2023-01-01"
"""The one version of every v2 route served here (as in the spec)."""
V2_MEDIA_TYPE = f"application/vnd.atlas.{V2_RESOURCE_VERSION}+json;charset=utf-8"
ERROR_CODE_HEADER = "X-Error-Code"
# Past this many live access tokens the oldest are forgotten (as for nonces).
_TOKEN_CAPACITY = 10_000
CloudProvider = Literal["AWS", "AZURE", "GCP"]
CLOUD_PROVIDERS: tuple[CloudProvider, ...] = ("AWS", "AZURE", "GCP")
# Status after a v2 POST, then one more per step_seconds; v1.0 starts AWS endpoints in NONE,
# a status the v2 enum does not have.
_PROVISIONING: dict[str, tuple[str, tuple[str, ...]]] = {
    "AWS": ("PENDING_ACCEPTANCE", ("PENDING", "AVAILABLE")),
    "AZURE": ("INITIATING", ("AVAILABLE",)),
    "GCP": ("INITIATING", ("VERIFIED", "AVAILABLE")),
}
_V1_PROVISIONING = ("NONE", ("PENDING_ACCEPTANCE", "PENDING", "AVAILABLE"))
# A GCP endpoint group's own status -> its forwarding rules' (whose enum has neither).
_GCP_RULE_STATUSES = {"VERIFIED": "INITIATING", "DELETED": "DELETING"}
# Atlas' region names (the snapshots of real answers say EU_WEST_1, not eu-west-1).
_DEFAULT_REGIONS: dict[str, str] = {"AWS": "US_EAST_1", "AZURE": "US_EAST_2", "GCP": "CENTRAL_US"}
_ATLAS_ERROR_CODES = {
    HTTPStatus.FORBIDDEN: "IP_ADDRESS_NOT_ON_ACCESS_LIST",
    HTTPStatus.NOT_FOUND: "RESOURCE_NOT_FOUND",
    HTTPStatus.TOO_MANY_REQUESTS: "RATE_LIMITED",
}
_ENDPOINT_COLLECTION = "/groups/{groupId}/privateEndpoint/{privateLinkId}/interfaceEndpoints"
_ENDPOINT_RESOURCE = _ENDPOINT_COLLECTION + "/{interfaceEndpointId}"
_CONTROL_ENDPOINT = "/_simulator/endpoints/{groupId}/{privateLinkId}/{interfaceEndpointId}"
_CONTROL_SERVICE = "/_simulator/services/{groupId}/{cloudProvider}/{serviceId}"
_V2_SERVICES = "/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService"
_V2_SERVICE = _V2_SERVICES + "/{serviceId}"
_V2_ENDPOINTS = _V2_SERVICE + "/endpoint"
_V2_ENDPOINT = _V2_ENDPOINTS + "/{endpointId}"
_VND_ATLAS = re.compile(r"application/vnd\.atlas\.(\d{4}-\d{2}-\d{2})\+json", re.IGNORECASE)


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
_AZURE_ENDPOINT_ID = _IdFormat(
    AZURE_PRIVATE_ENDPOINT_ID,
    "an Azure resource id '/subscriptions/<uuid>/resourceGroups/<group>/providers/"
    "Microsoft.Network/privateEndpoints/<name>'",
)
_GCP_ENDPOINT_GROUP_NAME = _IdFormat(
    GCP_ENDPOINT_GROUP_NAME,
    "a GCP endpoint group name: a lowercase letter, then at most 62 lowercase letters, "
    "digits or '-', not ending with '-'",
)
_GCP_PROJECT_ID = _IdFormat(
    # Google Cloud's rule; every id of the spec's own pattern, p- and 24 characters, is one.
    re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]"),
    "a Google Cloud project id",
)
_ENDPOINT_ID_FORMATS: dict[str, _IdFormat] = {
    "AWS": _INTERFACE_ENDPOINT_ID,
    "AZURE": _AZURE_ENDPOINT_ID,
    "GCP": _GCP_ENDPOINT_GROUP_NAME,
}
_PATH_ID_FORMATS = {
    "groupId": _OBJECT_ID,
    "privateLinkId": _OBJECT_ID,
    "serviceId": _OBJECT_ID,
    "interfaceEndpointId": _INTERFACE_ENDPOINT_ID,
}
ObjectId = Annotated[str, AfterValidator(_OBJECT_ID.check)]
InterfaceEndpointId = Annotated[str, AfterValidator(_INTERFACE_ENDPOINT_ID.check)]


def _infer_provider(endpoint_id: str) -> CloudProvider:
    """``vpce-...`` is AWS, a path is an Azure resource id, anything else a GCP group name."""
    if endpoint_id.startswith("vpce-"):
        return "AWS"
    if endpoint_id.startswith("/"):
        return "AZURE"
    return "GCP"


def _canonical_endpoint_id(cloud_provider: str, endpoint_id: str) -> str:
    """Azure resource ids are case-insensitive, so they are keyed in lower case."""
    return endpoint_id.lower() if cloud_provider == "AZURE" else endpoint_id


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


class _Step(BaseModel):
    """A scripted change ``after_seconds`` after the simulator started.

    A step changes exactly the fields it names, so ``error_message: null`` clears a message
    while leaving it out keeps the current one; no other field may be null.
    """

    model_config = ConfigDict(extra="forbid")

    after_seconds: float = Field(ge=0)
    status: str | None = None
    error_message: str | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"after_seconds"})

    @model_validator(mode="after")
    def _check_changes(self) -> Self:
        changes = self.changes()
        if not changes:
            changeable = [name for name in type(self).model_fields if name != "after_seconds"]
            raise ValueError(f"a step must change at least one of {', '.join(changeable)}")
        nulls = sorted(
            name for name, value in changes.items() if value is None and name != "error_message"
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave it out to keep it")
        return self


class TimelineStep(_Step):
    """A scripted change of an endpoint."""

    delete_requested: bool | None = None
    exists: bool | None = None


class ServiceTimelineStep(_Step):
    """A scripted change of an endpoint service: its status and errorMessage only."""


_AnyStep = TypeVar("_AnyStep", bound=_Step)


def _in_time_order(steps: list[_AnyStep]) -> list[_AnyStep]:
    """Stable, so steps at the same instant apply in file order."""
    return sorted(steps, key=lambda step: step.after_seconds)


class EndpointKey(NamedTuple):
    """The store's key; an Azure id is in lower case (see ``_canonical_endpoint_id``)."""

    group_id: str
    private_link_id: str
    interface_endpoint_id: str
    cloud_provider: str = "AWS"

    def service(self) -> ServiceKey:
        return ServiceKey(self.group_id, self.cloud_provider, self.private_link_id)


class ServiceKey(NamedTuple):
    group_id: str
    cloud_provider: str
    service_id: str


class _EndpointRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_id: ObjectId
    private_link_id: ObjectId
    cloud_provider: CloudProvider = "AWS"
    interface_endpoint_id: str

    @field_validator("interface_endpoint_id")
    @classmethod
    def _id_of_the_provider(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("cloud_provider")
        if provider is None:  # itself invalid, and reported as such
            return value
        return _ENDPOINT_ID_FORMATS[provider].check(value)

    def key(self) -> EndpointKey:
        return EndpointKey(
            self.group_id,
            self.private_link_id,
            _canonical_endpoint_id(self.cloud_provider, self.interface_endpoint_id),
            self.cloud_provider,
        )


class ScenarioEndpoint(_EndpointRef):
    """An endpoint's state when the simulator starts, its timeline and its faults."""

    exists: bool = True
    status: str = "AVAILABLE"
    error_message: str | None = None
    delete_requested: bool = False
    timeline: Annotated[list[TimelineStep], AfterValidator(_in_time_order)] = []
    faults: list[Fault] = []


class ScenarioService(BaseModel):
    """An endpoint service (Atlas' side of a private link) and its timeline."""

    model_config = ConfigDict(extra="forbid")

    group_id: ObjectId
    id: ObjectId
    cloud_provider: CloudProvider = "AWS"
    region: str | None = None
    """None: the provider's default region."""
    status: str = "AVAILABLE"
    error_message: str | None = None
    timeline: Annotated[list[ServiceTimelineStep], AfterValidator(_in_time_order)] = []

    def key(self) -> ServiceKey:
        return ServiceKey(self.group_id, self.cloud_provider, self.id)


class _Keyed(Protocol):
    def key(self) -> tuple[str, ...]: ...


_KeyedT = TypeVar("_KeyedT", bound=_Keyed)


def _without_duplicates(entries: list[_KeyedT]) -> list[_KeyedT]:
    first_index: dict[tuple[str, ...], int] = {}
    duplicates = []
    for index, entry in enumerate(entries):
        first = first_index.setdefault(entry.key(), index)
        if first != index:
            duplicates.append(f"entry {index} repeats entry {first} ({'/'.join(entry.key())})")
    if duplicates:
        raise ValueError("; ".join(duplicates))
    return entries


class Scenario(BaseModel):
    """Everything the simulator serves when it starts."""

    model_config = ConfigDict(extra="forbid")

    step_seconds: float = Field(default=10, gt=0)
    nonce_lifetime_seconds: float = Field(default=300, gt=0)
    token_lifetime_seconds: int = Field(default=3600, gt=0)
    rate_limit_per_minute: int | None = Field(default=None, gt=0)
    endpoint_services: list[ScenarioService] = []
    endpoints: list[ScenarioEndpoint] = []

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, endpoints: list[ScenarioEndpoint]) -> list[ScenarioEndpoint]:
        return _without_duplicates(endpoints)

    @field_validator("endpoint_services")
    @classmethod
    def _unique_services(cls, services: list[ScenarioService]) -> list[ScenarioService]:
        return _without_duplicates(services)


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
    """(method, endpoint id) of v1.0 and v2 requests that got past auth, ids and rate limit;
    the id as the request named it (decoded; for a POST the one in its body)."""
    token_requests: Counter[int] = field(default_factory=Counter)
    """HTTP status of every ``POST /api/oauth/token``; not part of ``requests``."""

    def total(self) -> int:
        return sum(self.requests.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total(),
            "challenges": self.challenges,
            "requests": _nest(self.requests.items()),
            "by_endpoint": _nest(self.by_endpoint.items()),
            "token_requests": {str(status): count for status, count in self.token_requests.items()},
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
        return _replay(self.initial, self.started_at, self.steps, now)


@dataclass(frozen=True)
class _ServiceState:
    status: str
    error_message: str | None


@dataclass(frozen=True)
class _ServiceScript:
    initial: _ServiceState
    started_at: float
    region: str
    steps: Sequence[ServiceTimelineStep] = ()

    def state_at(self, now: float) -> _ServiceState:
        return _replay(self.initial, self.started_at, self.steps, now)


_ScriptedState = TypeVar("_ScriptedState", _EndpointState, _ServiceState)


def _replay(
    initial: _ScriptedState,
    started_at: float,
    steps: Sequence[_Step],
    now: float,
) -> _ScriptedState:
    """The state after the steps due by ``now``, each changing exactly the fields it names."""
    state = initial
    for step in steps:
        if step.after_seconds > now - started_at:
            break
        state = replace(state, **step.changes())
    return state


@dataclass(frozen=True)
class _EndpointDetails:
    """What an endpoint's v2 document shows besides its state."""

    endpoint_id: str
    """As first spelt (an Azure id is keyed in lower case)."""
    ip_address: str
    """Azure's privateEndpointIPAddress."""
    gcp_endpoints: tuple[tuple[str, str], ...]
    """GCP's (endpointName, ipAddress) pairs."""

    @classmethod
    def derived(cls, endpoint_id: str) -> Self:
        """Addresses derived from the id, so every run shows the same ones."""
        return cls(
            endpoint_id,
            _derived_ip(endpoint_id),
            ((f"{endpoint_id}-0", _derived_ip(endpoint_id, 1)),),
        )


def _derived_ip(seed: str, index: int = 0) -> str:
    digest = hashlib.sha256(f"{seed}#{index}".encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{4 + digest[2] % 250}"


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


class _TokenRegistry:
    """Access tokens this simulator issued, with expiry times, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._expires_at: OrderedDict[str, float] = OrderedDict()

    def issue(self, now: float, lifetime: float) -> str:
        token = secrets.token_urlsafe(32)
        self._expires_at[token] = now + lifetime
        while len(self._expires_at) > self._capacity:
            self._expires_at.popitem(last=False)
        return token

    def is_valid(self, token: str, now: float) -> bool:
        expires_at = self._expires_at.get(token)
        if expires_at is None:
            return False
        if now >= expires_at:
            del self._expires_at[token]
            return False
        return True

    def __len__(self) -> int:
        return len(self._expires_at)


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
    BEARER_REJECTED = "bearer_rejected"


def _query_flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


# Set by the v2 middleware once the Accept header named a version it serves.
_MEDIA_TYPE_KEY = web.RequestKey("atlas_simulator_media_type", str)


def _json_response(
    request: web.Request,
    status: int,
    payload: Mapping[str, Any] | Sequence[Any],
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Atlas' output: compact JSON unless pretty=true, wrapped when envelope=true; typed
    application/json on v1.0 and for errors, and with the served vnd.atlas media type for
    v2's other answers."""
    document: Mapping[str, Any] | Sequence[Any] = payload
    if _query_flag(request, "envelope"):
        document = {"status": status, "content": payload}
    if _query_flag(request, "pretty"):
        text = json.dumps(document, indent=2)
    else:
        text = json.dumps(document, separators=(",", ":"))
    media_type = request.get(_MEDIA_TYPE_KEY) if status < HTTPStatus.BAD_REQUEST else None
    if media_type is None:
        return web.Response(
            status=status, body=text.encode(), content_type="application/json", headers=headers
        )
    response = web.Response(status=status, body=text.encode(), headers=headers)
    response.headers[hdrs.CONTENT_TYPE] = media_type
    return response


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
        headers = {**(self.headers or {}), ERROR_CODE_HEADER: self.error_code}
        return _json_response(request, self.status, body, headers)


def _check_path_ids(request: web.Request) -> None:
    """v1.0 and v2 path parameters; v2's provider first, since the endpoint id's format
    depends on it."""
    formats = _PATH_ID_FORMATS
    provider = request.match_info.get("cloudProvider")
    if provider is not None:
        if provider not in CLOUD_PROVIDERS:
            raise _AtlasError(
                HTTPStatus.BAD_REQUEST,
                "INVALID_ENUM_VALUE",
                f"An invalid enumeration value {provider} was specified.",
                [provider],
            )
        formats = {**formats, "endpointId": _ENDPOINT_ID_FORMATS[provider]}
    invalid = [
        name
        for name, value in request.match_info.items()
        if name in formats and not formats[name].matches(value)
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


async def _json_object_from_body(
    request: web.Request, *, allowed: Iterable[str], required: Sequence[str]
) -> dict[str, Any]:
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
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _invalid_attribute(unknown[0])
    for name in required:
        if name not in body:
            raise _AtlasError(
                HTTPStatus.BAD_REQUEST,
                "MISSING_ATTRIBUTE",
                f"The required attribute {name} was not specified.",
                [name],
            )
    return body


def _id_attribute(body: Mapping[str, Any], name: str, id_format: _IdFormat) -> str:
    value = body[name]
    if not isinstance(value, str) or not id_format.matches(value):
        raise _invalid_attribute(name)
    return value


def _ip_attribute(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise _invalid_attribute(name)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _invalid_attribute(name) from None


async def _interface_endpoint_id_from_body(request: web.Request) -> str:
    body = await _json_object_from_body(
        request, allowed={"interfaceEndpointId"}, required=["interfaceEndpointId"]
    )
    return _id_attribute(body, "interfaceEndpointId", _INTERFACE_ENDPOINT_ID)


async def _v2_endpoint_from_body(request: web.Request, cloud_provider: str) -> _EndpointDetails:
    """The endpoint a v2 POST asks for, in the provider's body format (see the docstring)."""
    if cloud_provider == "AWS":
        body = await _json_object_from_body(request, allowed={"id"}, required=["id"])
        return _EndpointDetails.derived(_id_attribute(body, "id", _INTERFACE_ENDPOINT_ID))
    if cloud_provider == "AZURE":
        names = ["id", "privateEndpointIPAddress"]
        body = await _json_object_from_body(request, allowed=names, required=names)
        endpoint_id = _id_attribute(body, "id", _AZURE_ENDPOINT_ID)
        ip_address = _ip_attribute(body["privateEndpointIPAddress"], "privateEndpointIPAddress")
        return replace(_EndpointDetails.derived(endpoint_id), ip_address=ip_address)
    body = await _json_object_from_body(
        request,
        allowed={"endpointGroupName", "endpoints", "gcpProjectId"},
        required=["endpointGroupName", "gcpProjectId"],
    )
    name = _id_attribute(body, "endpointGroupName", _GCP_ENDPOINT_GROUP_NAME)
    _id_attribute(body, "gcpProjectId", _GCP_PROJECT_ID)
    details = _EndpointDetails.derived(name)
    if "endpoints" not in body:
        return details
    endpoints = body["endpoints"]
    if not isinstance(endpoints, list) or not endpoints:
        raise _invalid_attribute("endpoints")
    pairs = []
    for entry in endpoints:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"endpointName", "ipAddress"}
            or not isinstance(entry["endpointName"], str)
            or not entry["endpointName"]
        ):
            raise _invalid_attribute("endpoints")
        pairs.append((entry["endpointName"], _ip_attribute(entry["ipAddress"], "endpoints")))
    return replace(details, gcp_endpoints=tuple(pairs))


def _atlas_body(interface_endpoint_id: str, state: _EndpointState) -> dict[str, Any]:
    return {
        "interfaceEndpointId": interface_endpoint_id,
        "connectionStatus": state.status,
        "errorMessage": state.error_message,
        "deleteRequested": state.delete_requested,
    }


def _v2_endpoint_body(
    cloud_provider: str, details: _EndpointDetails, state: _EndpointState
) -> dict[str, Any]:
    common = {
        "cloudProvider": cloud_provider,
        "deleteRequested": state.delete_requested,
        "errorMessage": state.error_message,
    }
    if cloud_provider == "AWS":
        return {
            **common,
            "interfaceEndpointId": details.endpoint_id,
            "connectionStatus": state.status,
        }
    if cloud_provider == "AZURE":
        return {
            **common,
            "privateEndpointResourceId": details.endpoint_id,
            "privateEndpointIPAddress": details.ip_address,
            "status": state.status,
        }
    return {
        **common,
        "endpointGroupName": details.endpoint_id,
        "endpoints": [
            {
                "endpointName": name,
                "ipAddress": ip_address,
                "status": _GCP_RULE_STATUSES.get(state.status, state.status),
            }
            for name, ip_address in details.gcp_endpoints
        ],
        "status": state.status,
    }


def _v2_service_body(
    key: ServiceKey, script: _ServiceScript, state: _ServiceState, endpoint_ids: list[str]
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": key.service_id,
        "cloudProvider": key.cloud_provider,
        "regionName": script.region,
        "status": state.status,
        "errorMessage": state.error_message,
    }
    if key.cloud_provider == "AWS":
        suffix = hashlib.sha256(key.service_id.encode()).hexdigest()[:17]
        region = script.region.lower().replace("_", "-")
        document["interfaceEndpoints"] = endpoint_ids
        document["endpointServiceName"] = f"com.amazonaws.vpce.{region}.vpce-svc-{suffix}"
    elif key.cloud_provider == "AZURE":
        document["privateEndpoints"] = endpoint_ids
        document["privateLinkServiceName"] = f"pls_{key.service_id}"
    else:
        region = script.region.lower().replace("_", "-")
        document["endpointGroupNames"] = endpoint_ids
        document["serviceAttachmentNames"] = [
            f"https://www.googleapis.com/compute/v1/projects/p-{key.service_id[:12]}"
            f"/regions/{region}/serviceAttachments/sa-{key.service_id}"
        ]
    return document


def _serves_version(media_type: str) -> bool:
    """Whether a media type (parameters allowed) names a v2 version date on or after the
    resource version served here, which Atlas then answers with."""
    match = _VND_ATLAS.fullmatch(media_type.partition(";")[0].strip())
    if match is None:
        return False
    try:
        requested = datetime.date.fromisoformat(match[1])
    except ValueError:
        return False
    return requested >= datetime.date.fromisoformat(V2_RESOURCE_VERSION)


def _accepts_served_version(accept: str) -> bool:
    """Whether an Accept header asks for a version served here; application/json, */* or
    no Accept at all do not (Atlas answers them 406)."""
    return any(_serves_version(media_range) for media_range in accept.split(","))


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


class _ServiceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = None
    error_message: str | None = None


class _ServiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_id: ObjectId
    cloud_provider: CloudProvider
    service_id: ObjectId

    def key(self) -> ServiceKey:
        return ServiceKey(self.group_id, self.cloud_provider, self.service_id)


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
        self._client_id = client_id
        self._client_secret = client_secret
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
                service.region or _DEFAULT_REGIONS[service.cloud_provider],
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
            status = _PROVISIONING[key.cloud_provider][0] if current is None else current.status
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
        if api_version is None:
            api_version = "v1.0" if key.cloud_provider == "AWS" else "v2"
        if state is None or (api_version == "v1.0" and key.cloud_provider != "AWS"):
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
            region = _DEFAULT_REGIONS[key.cloud_provider] if current is None else current.region
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
            region = _DEFAULT_REGIONS[key.cloud_provider]
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
        response = await self._answer_token_request(request)
        self.stats.token_requests[response.status] += 1
        log.debug("simulator_token_request", status=response.status)
        return response

    async def _answer_token_request(self, request: web.Request) -> web.Response:
        """OAuth 2 client credentials grant (RFC 6749 section 4.4) as Atlas serves it."""
        headers = {hdrs.CACHE_CONTROL: "no-store", hdrs.PRAGMA: "no-cache"}
        if not self._client_is_valid(request.headers.get(hdrs.AUTHORIZATION, "")):
            body = {"error": "invalid_client", "error_description": "Invalid client credentials."}
            return web.json_response(body, status=HTTPStatus.UNAUTHORIZED, headers=headers)
        if request.content_type != "application/x-www-form-urlencoded":
            body = {
                "error": "invalid_request",
                "error_description": "The body must be application/x-www-form-urlencoded.",
            }
            return web.json_response(body, status=HTTPStatus.BAD_REQUEST, headers=headers)
        grant_type = (await request.post()).get("grant_type")
        if grant_type != "client_credentials":
            error = "invalid_request" if grant_type is None else "unsupported_grant_type"
            body = {"error": error, "error_description": "Only client_credentials is supported."}
            return web.json_response(body, status=HTTPStatus.BAD_REQUEST, headers=headers)
        lifetime = self.scenario.token_lifetime_seconds
        token = self._tokens.issue(self._clock(), lifetime)
        granted = {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}
        return web.json_response(granted, headers=headers)

    def _client_is_valid(self, authorization: str) -> bool:
        if self._client_id is None or self._client_secret is None:
            return False
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        encoded_id, colon, encoded_secret = decoded.partition(":")
        client_id, client_secret = unquote_plus(encoded_id), unquote_plus(encoded_secret)
        # Both compared, always, so the answer time does not tell which one was wrong.
        id_ok = hmac.compare_digest(client_id.encode(), self._client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        return bool(colon) and id_ok and secret_ok

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
            _canonical_endpoint_id(cloud_provider, details.endpoint_id),
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
        first_status, later_statuses = _PROVISIONING[key.cloud_provider] if v2 else _V1_PROVISIONING
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


def _is_v2(request: web.Request) -> bool:
    return request.path.startswith(API_V2_ROOT + "/")


def _endpoint_key(
    group_id: str,
    private_link_id: str,
    interface_endpoint_id: str,
    cloud_provider: str | None = None,
) -> EndpointKey:
    reference = _EndpointRef.model_validate(
        {
            "group_id": group_id,
            "private_link_id": private_link_id,
            "cloud_provider": cloud_provider or _infer_provider(interface_endpoint_id),
            "interface_endpoint_id": interface_endpoint_id,
        }
    )
    return reference.key()


def _service_key(group_id: str, cloud_provider: str, service_id: str) -> ServiceKey:
    reference = _ServiceRef.model_validate(
        {"group_id": group_id, "cloud_provider": cloud_provider, "service_id": service_id}
    )
    return reference.key()


def _path_key(request: web.Request) -> EndpointKey:
    """Only for v1.0 API routes, whose ids the middleware has already checked."""
    match = request.match_info
    return EndpointKey(match["groupId"], match["privateLinkId"], match["interfaceEndpointId"])


def _v2_path_key(request: web.Request) -> EndpointKey:
    """Only for v2 endpoint routes, whose ids the middleware has already checked; aiohttp
    matched the still-encoded path (so an Azure id's %2F stays inside one segment) and
    decoded the segment once."""
    match = request.match_info
    cloud_provider = match["cloudProvider"]
    return EndpointKey(
        match["groupId"],
        match["serviceId"],
        _canonical_endpoint_id(cloud_provider, match["endpointId"]),
        cloud_provider,
    )


def _control_key(request: web.Request) -> tuple[EndpointKey, str]:
    """The key and the endpoint id as the URL spelt it (decoded)."""
    match = request.match_info
    endpoint_id = match["interfaceEndpointId"]
    cloud_provider = request.query.get("cloud_provider")
    key = _endpoint_key(match["groupId"], match["privateLinkId"], endpoint_id, cloud_provider)
    return key, endpoint_id


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
