"""The simulator's paths and the keys they name, for the API and the unauthenticated
control routes."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)

from monitor.providers import CloudProvider, inferred_provider, spec_of
from monitor.simulator.ids import ObjectId
from monitor.simulator.scenario import (
    EndpointKey,
    ServiceKey,
    _describe_validation_error,
    _EndpointRef,
)

_ENDPOINT_COLLECTION = "/groups/{groupId}/privateEndpoint/{privateLinkId}/interfaceEndpoints"
_ENDPOINT_RESOURCE = _ENDPOINT_COLLECTION + "/{interfaceEndpointId}"
_CONTROL_ENDPOINT = "/_simulator/endpoints/{groupId}/{privateLinkId}/{interfaceEndpointId}"
_CONTROL_SERVICE = "/_simulator/services/{groupId}/{cloudProvider}/{serviceId}"
_V2_SERVICES = "/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService"
_V2_SERVICE = _V2_SERVICES + "/{serviceId}"
_V2_ENDPOINTS = _V2_SERVICE + "/endpoint"
_V2_ENDPOINT = _V2_ENDPOINTS + "/{endpointId}"


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
        return ServiceKey(self.group_id, self.cloud_provider.value, self.service_id)


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
            "cloud_provider": cloud_provider or inferred_provider(interface_endpoint_id),
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
        spec_of(cloud_provider).comparable_id(match["endpointId"]),
        cloud_provider,
    )


def _control_key(request: web.Request) -> tuple[EndpointKey, str]:
    """The key and the endpoint id as the URL spelt it (decoded)."""
    match = request.match_info
    endpoint_id = match["interfaceEndpointId"]
    cloud_provider = request.query.get("cloud_provider")
    key = _endpoint_key(match["groupId"], match["privateLinkId"], endpoint_id, cloud_provider)
    return key, endpoint_id


def _control_error(error: ValidationError) -> web.Response:
    message = "\n".join(_describe_validation_error(error))
    status = HTTPStatus.BAD_REQUEST
    return web.json_response({"error": status, "detail": message}, status=status)
