"""Atlas' HTTP conventions: JSON answers (envelope, pretty), error bodies, v2 version
negotiation, path id checks and the attribute errors of request bodies."""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web

from monitor.providers import IdRule, spec_of
from monitor.simulator.ids import _PATH_ID_FORMATS

API_V2_ROOT = "/api/atlas/v2"
V2_RESOURCE_VERSION = "2023-01-01"
"""The one version of every v2 route served here (as in the spec)."""
V2_MEDIA_TYPE = f"application/vnd.atlas.{V2_RESOURCE_VERSION}+json;charset=utf-8"
ERROR_CODE_HEADER = "X-Error-Code"
_ATLAS_ERROR_CODES = {
    HTTPStatus.FORBIDDEN: "IP_ADDRESS_NOT_ON_ACCESS_LIST",
    HTTPStatus.NOT_FOUND: "RESOURCE_NOT_FOUND",
    HTTPStatus.TOO_MANY_REQUESTS: "RATE_LIMITED",
}
_VND_ATLAS = re.compile(r"application/vnd\.atlas\.(\d{4}-\d{2}-\d{2})\+json", re.IGNORECASE)


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
        try:
            spec = spec_of(provider)
        except ValueError:
            raise _AtlasError(
                HTTPStatus.BAD_REQUEST,
                "INVALID_ENUM_VALUE",
                f"An invalid enumeration value {provider} was specified.",
                [provider],
            ) from None
        formats = {**formats, "endpointId": spec.endpoint_id}
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


def _id_attribute(body: Mapping[str, Any], name: str, id_format: IdRule) -> str:
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


def _is_v2(request: web.Request) -> bool:
    return request.path.startswith(API_V2_ROOT + "/")


def _not_found(request: web.Request) -> _AtlasError:
    return _AtlasError(
        HTTPStatus.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        f"Cannot find resource {request.path}.",
        [request.path],
    )
