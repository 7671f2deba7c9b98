"""The resources' JSON: POST bodies read per API version and provider, GET documents written.

What differs between providers beyond ``monitor.providers`` (a v2 POST's body, the extra fields
of an endpoint's and a service's document) is one ``_V2Shape`` each in ``_V2_SHAPES``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from monitor.providers import PROVIDERS, CloudProvider, spec_of
from monitor.simulator.http import (
    _id_attribute,
    _invalid_attribute,
    _ip_attribute,
    _json_object_from_body,
)
from monitor.simulator.ids import _GCP_PROJECT_ID
from monitor.simulator.scenario import ServiceKey
from monitor.simulator.state import _EndpointDetails, _EndpointState, _ServiceScript, _ServiceState

# A GCP endpoint group's own status -> its forwarding rules' (whose enum has neither).
_GCP_RULE_STATUSES = {"VERIFIED": "INITIATING", "DELETED": "DELETING"}


async def _interface_endpoint_id_from_body(request: web.Request) -> str:
    body = await _json_object_from_body(
        request, allowed={"interfaceEndpointId"}, required=["interfaceEndpointId"]
    )
    return _id_attribute(body, "interfaceEndpointId", PROVIDERS[CloudProvider.AWS].endpoint_id)


async def _aws_endpoint_from_body(request: web.Request) -> _EndpointDetails:
    body = await _json_object_from_body(request, allowed={"id"}, required=["id"])
    id_rule = PROVIDERS[CloudProvider.AWS].endpoint_id
    return _EndpointDetails.derived(_id_attribute(body, "id", id_rule))


async def _azure_endpoint_from_body(request: web.Request) -> _EndpointDetails:
    names = ["id", "privateEndpointIPAddress"]
    body = await _json_object_from_body(request, allowed=names, required=names)
    endpoint_id = _id_attribute(body, "id", PROVIDERS[CloudProvider.AZURE].endpoint_id)
    ip_address = _ip_attribute(body["privateEndpointIPAddress"], "privateEndpointIPAddress")
    return replace(_EndpointDetails.derived(endpoint_id), ip_address=ip_address)


async def _gcp_endpoint_from_body(request: web.Request) -> _EndpointDetails:
    body = await _json_object_from_body(
        request,
        allowed={"endpointGroupName", "endpoints", "gcpProjectId"},
        required=["endpointGroupName", "gcpProjectId"],
    )
    id_rule = PROVIDERS[CloudProvider.GCP].endpoint_id
    name = _id_attribute(body, "endpointGroupName", id_rule)
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


def _no_endpoint_fields(details: _EndpointDetails, state: _EndpointState) -> dict[str, Any]:
    return {}


def _azure_endpoint_fields(details: _EndpointDetails, state: _EndpointState) -> dict[str, Any]:
    return {"privateEndpointIPAddress": details.ip_address}


def _gcp_endpoint_fields(details: _EndpointDetails, state: _EndpointState) -> dict[str, Any]:
    return {
        "endpoints": [
            {
                "endpointName": name,
                "ipAddress": ip_address,
                "status": _GCP_RULE_STATUSES.get(state.status, state.status),
            }
            for name, ip_address in details.gcp_endpoints
        ]
    }


def _aws_service_fields(key: ServiceKey, region: str) -> dict[str, Any]:
    suffix = hashlib.sha256(key.service_id.encode()).hexdigest()[:17]
    aws_region = region.lower().replace("_", "-")
    return {"endpointServiceName": f"com.amazonaws.vpce.{aws_region}.vpce-svc-{suffix}"}


def _azure_service_fields(key: ServiceKey, region: str) -> dict[str, Any]:
    return {"privateLinkServiceName": f"pls_{key.service_id}"}


def _gcp_service_fields(key: ServiceKey, region: str) -> dict[str, Any]:
    gcp_region = region.lower().replace("_", "-")
    return {
        "serviceAttachmentNames": [
            f"https://www.googleapis.com/compute/v1/projects/p-{key.service_id[:12]}"
            f"/regions/{gcp_region}/serviceAttachments/sa-{key.service_id}"
        ]
    }


@dataclass(frozen=True)
class _V2Shape:
    """A provider's v2 documents beyond the fields ``ProviderSpec`` names."""

    endpoint_from_body: Callable[[web.Request], Awaitable[_EndpointDetails]]
    """Reads a POST's body (see the package docstring for each provider's)."""
    endpoint_fields: Callable[[_EndpointDetails, _EndpointState], dict[str, Any]]
    service_fields: Callable[[ServiceKey, str], dict[str, Any]]


_V2_SHAPES: Mapping[CloudProvider, _V2Shape] = {
    CloudProvider.AWS: _V2Shape(_aws_endpoint_from_body, _no_endpoint_fields, _aws_service_fields),
    CloudProvider.AZURE: _V2Shape(
        _azure_endpoint_from_body, _azure_endpoint_fields, _azure_service_fields
    ),
    CloudProvider.GCP: _V2Shape(_gcp_endpoint_from_body, _gcp_endpoint_fields, _gcp_service_fields),
}


async def _v2_endpoint_from_body(request: web.Request, cloud_provider: str) -> _EndpointDetails:
    """The endpoint a v2 POST asks for, in the provider's body format."""
    return await _V2_SHAPES[CloudProvider(cloud_provider)].endpoint_from_body(request)


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
    spec = spec_of(cloud_provider)
    return {
        "cloudProvider": cloud_provider,
        "deleteRequested": state.delete_requested,
        "errorMessage": state.error_message,
        spec.endpoint_id_field: details.endpoint_id,
        spec.status_field: state.status,
        **_V2_SHAPES[spec.provider].endpoint_fields(details, state),
    }


def _v2_service_body(
    key: ServiceKey, script: _ServiceScript, state: _ServiceState, endpoint_ids: list[str]
) -> dict[str, Any]:
    spec = spec_of(key.cloud_provider)
    return {
        "id": key.service_id,
        "cloudProvider": key.cloud_provider,
        "regionName": script.region,
        "status": state.status,
        "errorMessage": state.error_message,
        spec.service_endpoints_field: endpoint_ids,
        **_V2_SHAPES[spec.provider].service_fields(key, script.region),
    }
