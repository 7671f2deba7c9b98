"""One ``ProviderSpec`` per cloud: everything the monitor knows about a provider's endpoints.

The client (parsing v2 answers), the config (checking ids, what may be added) and the
simulator (checking paths and bodies, provisioning, documents) all read ``PROVIDERS``, so
they cannot drift apart, and a fourth provider is one ``CloudProvider`` member plus one
entry here (its v2 POST body and document shapes in the simulator aside, see
``monitor/simulator/documents.py``). Every id rule is held against Atlas' v2 spec in
tests/test_spec_excerpt.py, which names where they knowingly differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar


class CloudProvider(StrEnum):
    AWS = "AWS"
    AZURE = "AZURE"
    GCP = "GCP"


class ConnectionStatus(StrEnum):
    """Every endpoint status of every provider; each ``ProviderSpec`` says which are its own."""

    NONE = "NONE"
    PENDING_ACCEPTANCE = "PENDING_ACCEPTANCE"
    PENDING = "PENDING"
    INITIATING = "INITIATING"
    VERIFIED = "VERIFIED"
    AVAILABLE = "AVAILABLE"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"
    """Anything Atlas may add later; the raw value is kept beside it."""

    @classmethod
    def parse(cls, raw: str, provider: CloudProvider = CloudProvider.AWS) -> ConnectionStatus:
        """A status another provider uses is as unexpected here as a made-up one."""
        return _parse_status(cls, raw, PROVIDERS[provider].endpoint_statuses, cls.UNKNOWN)


class ServiceStatus(StrEnum):
    """Statuses of an endpoint service (Atlas' side of the private link)."""

    INITIATING = "INITIATING"
    WAITING_FOR_USER = "WAITING_FOR_USER"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    DELETING = "DELETING"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, raw: str, provider: CloudProvider) -> ServiceStatus:
        return _parse_status(cls, raw, PROVIDERS[provider].service_statuses, cls.UNKNOWN)


_Status = TypeVar("_Status", ConnectionStatus, ServiceStatus)


def _parse_status(
    kind: type[_Status], raw: str, known: tuple[_Status, ...], unknown: _Status
) -> _Status:
    try:
        status = kind(raw)
    except ValueError:
        return unknown
    return status if status in known and status is not unknown else unknown


@dataclass(frozen=True)
class IdRule:
    """An id's pattern and the words that say what it must be, for every error about it."""

    pattern: re.Pattern[str]
    description: str

    def matches(self, value: str) -> bool:
        return self.pattern.fullmatch(value) is not None

    def check(self, value: str) -> str:
        """Pydantic validator form: config, scenario files and paths share one definition."""
        if not self.matches(value):
            raise ValueError(f"must be {self.description}, got {value!r}")
        return value


OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
"""Atlas project (group) and private endpoint service ids, on every provider. The spec says
lower case; upper case is taken too and lowered before it is sent."""
OBJECT_ID_RULE = IdRule(OBJECT_ID, "24 hexadecimal characters")
INTERFACE_ENDPOINT_ID = re.compile(r"vpce-(?:[0-9a-f]{8}|[0-9a-f]{17})")
"""AWS VPC interface endpoint ids: the long form the spec names and the short form of
endpoints created before AWS lengthened its ids in 2018, which v1.0 still shows."""
AZURE_PRIVATE_ENDPOINT_ID = re.compile(
    r"/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"/resourceGroups/[-\w.()]{1,90}/providers/Microsoft\.Network"
    r"/privateEndpoints/[-\w.()]{1,80}",
    re.IGNORECASE,
)
"""Azure private endpoint resource ids (Azure compares them case-insensitively). Names take
what the spec's pattern takes, parentheses included, and letters may be Unicode as in
Azure's rules. Lengths: resource groups 90 (Azure's limit); endpoint names 80, wider than the
64 Azure documents for private endpoints, since refusing a real id blinds the monitor to that
endpoint while a too-long one costs one answer from Atlas."""
GCP_ENDPOINT_GROUP_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
"""GCP endpoint group names: the resource-name rule of Google Cloud (the spec has none)."""


@dataclass(frozen=True)
class ProviderSpec:
    """What differs between clouds, as data; code asks the spec instead of naming a cloud."""

    provider: CloudProvider
    endpoint_id: IdRule
    """What the provider's endpoint id looks like (config, scenario, paths, POST bodies)."""
    id_prefix: str
    """How an endpoint id shows its provider when nobody names it (the simulator's steering
    calls); the empty prefix, taken last, matches anything."""
    endpoint_statuses: tuple[ConnectionStatus, ...]
    """The endpoint statuses of its state set, in order, UNKNOWN last: the v2 spec's enum of
    the provider (plus AWS NONE, which v1.0 answers and Terraform waits on)."""
    provisioning: tuple[ConnectionStatus, ...]
    """Statuses a new endpoint passes through on its way to AVAILABLE, in v2's order;
    staying among them is "stuck"."""
    endpoint_id_field: str
    """The v2 endpoint document's field naming the endpoint."""
    status_field: str
    """The v2 endpoint document's field holding its status."""
    service_endpoints_field: str
    """The v2 endpoint service document's field listing its endpoints."""
    ids_ignore_case: bool = False
    """Whether the provider compares endpoint ids case-insensitively (keyed in lower case)."""
    id_is_resource_path: bool = False
    """Whether an endpoint id is a resource path whose last segment is the name people know."""
    served_by_v1: bool = False
    """Whether Atlas' v1.0 API shows the provider's endpoints (only v2 shows the others)."""
    can_be_added: bool = False
    """Whether add_missing may create its endpoints: the others need details (addresses,
    forwarding rules) only the operator's cloud account knows."""
    simulator_region: str = ""
    """The region the simulator gives a service nobody placed (Atlas' spelling)."""
    service_statuses: tuple[ServiceStatus, ...] = tuple(ServiceStatus)
    """Endpoint service statuses: the spec gives every provider the same enum."""

    def display_name(self, endpoint_id: str) -> str | None:
        """The name a discovered endpoint gets, when its id carries one."""
        return endpoint_id.rsplit("/", 1)[-1] if self.id_is_resource_path else None

    def comparable_id(self, endpoint_id: str) -> str:
        """The form two ids of the same endpoint share."""
        return endpoint_id.lower() if self.ids_ignore_case else endpoint_id


_SPECS = (
    ProviderSpec(
        CloudProvider.AWS,
        endpoint_id=IdRule(
            INTERFACE_ENDPOINT_ID,
            "an AWS interface endpoint id: 'vpce-' followed by 8 or 17 lowercase hexadecimal "
            "characters",
        ),
        id_prefix="vpce-",
        endpoint_statuses=(
            ConnectionStatus.NONE,
            ConnectionStatus.PENDING_ACCEPTANCE,
            ConnectionStatus.PENDING,
            ConnectionStatus.AVAILABLE,
            ConnectionStatus.REJECTED,
            ConnectionStatus.DELETING,
            ConnectionStatus.UNKNOWN,
        ),
        provisioning=(ConnectionStatus.PENDING_ACCEPTANCE, ConnectionStatus.PENDING),
        endpoint_id_field="interfaceEndpointId",
        status_field="connectionStatus",
        service_endpoints_field="interfaceEndpoints",
        served_by_v1=True,
        can_be_added=True,
        simulator_region="US_EAST_1",
    ),
    ProviderSpec(
        CloudProvider.AZURE,
        endpoint_id=IdRule(
            AZURE_PRIVATE_ENDPOINT_ID,
            "an Azure private endpoint resource id: /subscriptions/<uuid>/resourceGroups/<group>"
            "/providers/Microsoft.Network/privateEndpoints/<name>",
        ),
        id_prefix="/",
        endpoint_statuses=(
            ConnectionStatus.INITIATING,
            ConnectionStatus.AVAILABLE,
            ConnectionStatus.FAILED,
            ConnectionStatus.DELETING,
            ConnectionStatus.UNKNOWN,
        ),
        provisioning=(ConnectionStatus.INITIATING,),
        endpoint_id_field="privateEndpointResourceId",
        status_field="status",
        service_endpoints_field="privateEndpoints",
        ids_ignore_case=True,
        id_is_resource_path=True,
        simulator_region="US_EAST_2",
    ),
    ProviderSpec(
        CloudProvider.GCP,
        endpoint_id=IdRule(
            GCP_ENDPOINT_GROUP_NAME,
            "a GCP endpoint group name: lowercase letters, digits and '-', starting with a "
            "letter, at most 63 characters",
        ),
        id_prefix="",
        endpoint_statuses=(
            ConnectionStatus.INITIATING,
            ConnectionStatus.VERIFIED,
            ConnectionStatus.AVAILABLE,
            ConnectionStatus.FAILED,
            ConnectionStatus.DELETING,
            ConnectionStatus.DELETED,
            ConnectionStatus.UNKNOWN,
        ),
        provisioning=(ConnectionStatus.INITIATING, ConnectionStatus.VERIFIED),
        endpoint_id_field="endpointGroupName",
        status_field="status",
        service_endpoints_field="endpointGroupNames",
        simulator_region="CENTRAL_US",
    ),
)
PROVIDERS: Mapping[CloudProvider, ProviderSpec] = {spec.provider: spec for spec in _SPECS}

ENDPOINT_STATUSES: Mapping[CloudProvider, tuple[ConnectionStatus, ...]] = {
    provider: spec.endpoint_statuses for provider, spec in PROVIDERS.items()
}
SERVICE_STATUSES: Mapping[CloudProvider, tuple[ServiceStatus, ...]] = {
    provider: spec.service_statuses for provider, spec in PROVIDERS.items()
}
PROVISIONING_STATUSES = frozenset(
    {ConnectionStatus.NONE}.union(*(spec.provisioning for spec in _SPECS))
)
"""Statuses an endpoint passes through on its way to AVAILABLE on any provider (v1.0's AWS
NONE included); staying among them is "stuck"."""


def spec_of(provider: str) -> ProviderSpec:
    """The spec of a provider named by its value; ValueError for an unknown one."""
    return PROVIDERS[CloudProvider(provider)]


_BY_LONGEST_ID_PREFIX = sorted(_SPECS, key=lambda spec: len(spec.id_prefix), reverse=True)
"""GCP's empty prefix matches every id, so it is tried last."""


def inferred_provider(endpoint_id: str) -> CloudProvider:
    """The provider an endpoint id's form shows (``vpce-...`` AWS, a path Azure, else GCP)."""
    return next(
        spec.provider for spec in _BY_LONGEST_ID_PREFIX if endpoint_id.startswith(spec.id_prefix)
    )


def provider_names(which: Callable[[ProviderSpec], bool]) -> str:
    """``"AWS"`` or ``"AWS and GCP"``: the providers ``which`` picks, for error messages."""
    return " and ".join(spec.provider.value for spec in _SPECS if which(spec))
