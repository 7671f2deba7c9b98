"""Endpoint and service state as a function of time (no background task), and the request stats."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self, TypeVar

from monitor.simulator.scenario import ServiceTimelineStep, TimelineStep, _Step

# Status recorded in SimulatorStats when the client got no HTTP response at all.
DROPPED = 0


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
