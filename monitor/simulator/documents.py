"""The resources' JSON: POST bodies read per API version and provider, GET documents written."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from aiohttp import web

from monitor.simulator.http import (
    _id_attribute,
    _invalid_attribute,
    _ip_attribute,
    _json_object_from_body,
)
from monitor.simulator.ids import (
    _AZURE_ENDPOINT_ID,
    _GCP_ENDPOINT_GROUP_NAME,
    _GCP_PROJECT_ID,
    _INTERFACE_ENDPOINT_ID,
)
from monitor.simulator.scenario import ServiceKey
from monitor.simulator.state import _EndpointDetails, _EndpointState, _ServiceScript, _ServiceState

# A GCP endpoint group's own status -> its forwarding rules' (whose enum has neither).
_GCP_RULE_STATUSES = {"VERIFIED": "INITIATING", "DELETED": "DELETING"}


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
