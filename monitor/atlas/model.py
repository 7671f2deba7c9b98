"""What the client speaks about: API versions and paths, endpoint refs, the answers it parses
(strictly, since a wrong shape would make us report something false), and credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

import structlog
from pydantic import SecretStr

from monitor.logs import masked
from monitor.providers import (
    OBJECT_ID,
    PROVIDERS,
    CloudProvider,
    ConnectionStatus,
    ServiceStatus,
)

log = structlog.get_logger(__name__)

API_ROOT: Final = "/api/atlas/v1.0"
API_ROOT_V2: Final = "/api/atlas/v2"
V2_MEDIA_TYPE: Final = "application/vnd.atlas.2023-01-01+json"
"""The v2 resource version this client speaks, in Accept and in the Content-Type of a POST's
body (the spec declares no other for these routes); Atlas picks the answer's shape from it."""

REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""Atlas region names (us-east-1, US_EAST_2, CENTRAL_US, EUROPE_WEST): the only text of an
answer that becomes a label value, so anything else is dropped rather than exported."""


class ApiVersion(StrEnum):
    """The Administration API generation: where resources live and how they are asked for."""

    V1 = "v1.0"
    """Deprecated by Atlas, AWS only; the default so existing configs keep working."""
    V2 = "v2"

    @property
    def root(self) -> str:
        return API_ROOT if self is ApiVersion.V1 else API_ROOT_V2

    @property
    def media_type(self) -> str:
        """What requests ask answers in (Accept) and send bodies in (Content-Type)."""
        return "application/json" if self is ApiVersion.V1 else V2_MEDIA_TYPE

    @property
    def added_endpoint_field(self) -> str:
        """The field of a POST body that names the AWS endpoint to add."""
        return "interfaceEndpointId" if self is ApiVersion.V1 else "id"

    def endpoints_path(self, ref: EndpointRef) -> str:
        """The collection a new endpoint is POSTed to."""
        if self is ApiVersion.V1:
            return (
                f"/groups/{ref.group_id}/privateEndpoint/{ref.private_link_id}/interfaceEndpoints"
            )
        return f"{service_path(ref.group_id, ref.cloud_provider, ref.private_link_id)}/endpoint"

    def endpoint_path(self, ref: EndpointRef) -> str:
        # Azure ids are resource paths: their slashes must stay inside one path segment.
        return f"{self.endpoints_path(ref)}/{quote(ref.interface_endpoint_id, safe='')}"


def services_path(group_id: str, provider: CloudProvider) -> str:
    return f"/groups/{group_id}/privateEndpoint/{provider.value}/endpointService"


def service_path(group_id: str, provider: CloudProvider, service_id: str) -> str:
    return f"{services_path(group_id, provider)}/{service_id}"


@dataclass(frozen=True, order=True)
class EndpointRef:
    """The ids that name one private endpoint in Atlas: the project, the endpoint service
    (``private_link_id``) and the endpoint itself, on one cloud provider."""

    group_id: str
    private_link_id: str
    interface_endpoint_id: str
    cloud_provider: CloudProvider = CloudProvider.AWS

    def __str__(self) -> str:
        return f"{self.group_id}/{self.private_link_id}/{self.interface_endpoint_id}"

    @property
    def key(self) -> EndpointRef:
        """What makes two refs the same endpoint: Azure resource ids ignore case."""
        return replace(self, interface_endpoint_id=self._comparable(self.interface_endpoint_id))

    def same_endpoint_id(self, other: str) -> bool:
        return self._comparable(other) == self._comparable(self.interface_endpoint_id)

    def _comparable(self, endpoint_id: str) -> str:
        return PROVIDERS[self.cloud_provider].comparable_id(endpoint_id)


@dataclass(frozen=True, order=True)
class ServiceKey:
    """One endpoint service: Atlas' side of the private link that endpoints connect to."""

    group_id: str
    cloud_provider: CloudProvider
    service_id: str


@dataclass(frozen=True)
class InterfaceEndpoint:
    """One valid answer from Atlas about a private endpoint (an AWS interface endpoint, an
    Azure private endpoint or a GCP endpoint group)."""

    interface_endpoint_id: str
    connection_status: ConnectionStatus
    raw_status: str
    error_message: str | None
    delete_requested: bool

    @classmethod
    def from_json(
        cls, document: object, provider: CloudProvider = CloudProvider.AWS
    ) -> InterfaceEndpoint:
        """Strict on types, because a wrong shape means we would report something false."""
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        _check_provider(document, provider)
        spec = PROVIDERS[provider]
        id_field, status_field = spec.endpoint_id_field, spec.status_field
        endpoint_id = document.get(id_field)
        raw_status = document.get(status_field)
        delete_requested = document.get("deleteRequested", False)
        if not isinstance(endpoint_id, str):
            raise ValueError(f"{id_field} is missing or not a string")
        if not isinstance(raw_status, str):
            raise ValueError(f"{status_field} is missing or not a string")
        if not isinstance(delete_requested, bool):
            raise ValueError("deleteRequested is not a boolean")
        return cls(
            interface_endpoint_id=endpoint_id,
            connection_status=ConnectionStatus.parse(raw_status, provider),
            raw_status=_status_text(raw_status),
            error_message=_error_message(document),
            delete_requested=delete_requested,
        )


@dataclass(frozen=True)
class EndpointService:
    """One valid answer from Atlas about an endpoint service, with the endpoints it has."""

    service_id: str
    cloud_provider: CloudProvider
    region: str | None
    status: ServiceStatus
    raw_status: str
    error_message: str | None
    endpoint_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, document: object, provider: CloudProvider) -> EndpointService:
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        _check_provider(document, provider)
        service_id = document.get("id")
        raw_status = document.get("status")
        region = document.get("regionName")
        endpoints_field = PROVIDERS[provider].service_endpoints_field
        endpoint_ids = document.get(endpoints_field) or []
        if not isinstance(service_id, str) or not OBJECT_ID.fullmatch(service_id):
            raise ValueError("id is missing or not 24 hexadecimal characters")
        if not isinstance(raw_status, str):
            raise ValueError("status is missing or not a string")
        if region is not None and not isinstance(region, str):
            raise ValueError("regionName is not a string")
        if region is not None and not REGION_NAME.fullmatch(region):
            # The status is still worth having; only the label value is not.
            log.warning(
                "endpoint_service_region_unusable",
                private_link_id=service_id,
                region_length=len(region),
                region_start=ascii(region[:40]),
            )
            region = None
        if not isinstance(endpoint_ids, list) or not all(
            isinstance(endpoint_id, str) for endpoint_id in endpoint_ids
        ):
            raise ValueError(f"{endpoints_field} is not a list of strings")
        return cls(
            service_id=service_id.lower(),
            cloud_provider=provider,
            region=region,
            status=ServiceStatus.parse(raw_status, provider),
            raw_status=_status_text(raw_status),
            error_message=_error_message(document),
            endpoint_ids=tuple(endpoint_ids),
        )


def _check_provider(document: dict[str, Any], provider: CloudProvider) -> None:
    cloud_provider = document.get("cloudProvider", provider.value)
    if cloud_provider != provider.value:
        raise ValueError(f"cloudProvider is {cloud_provider!r}, not {provider.value}")


def _status_text(raw_status: str) -> str:
    """The status as Atlas wrote it, with every known secret masked: an unexpected one is
    free text too, kept in the state file and shown by ``once``, not only logged."""
    return str(masked(raw_status))


def _error_message(document: dict[str, Any]) -> str | None:
    """Atlas' errorMessage, with every known secret masked: from here it goes to a label
    (and so to alert annotations and pagers) and into the state file, not only to the log,
    and a proxy or Atlas itself may echo the request that carried the key."""
    error_message = document.get("errorMessage")
    if error_message is not None and not isinstance(error_message, str):
        raise ValueError("errorMessage is neither null nor a string")
    return masked(error_message) if error_message else None


@dataclass(frozen=True)
class ApiKey:
    """A programmatic API key: HTTP Digest with the public key as user."""

    public_key: str
    private_key: SecretStr


@dataclass(frozen=True)
class ServiceAccount:
    """An Atlas service account: OAuth 2 client credentials for a Bearer token."""

    client_id: str
    client_secret: SecretStr


Login = ApiKey | ServiceAccount
