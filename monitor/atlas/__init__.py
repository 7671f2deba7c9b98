"""Client for the Atlas Administration API's private-endpoint resources, v1.0 and v2.

Everything that can go wrong between us and Atlas ends up as one of the ``Atlas*Error``
types, classified by HTTP status as Atlas documents it, with Atlas' own errorCode and detail
kept for logs and alerts. Transient failures (429, 5xx, timeouts, broken connections) are
retried with capped exponential backoff and full jitter, so callers only ever see the final
outcome.

The package, in import order (each module imports only those before it, so no cycle):
``model`` (versions, paths, refs, parsed answers, credentials), ``errors``, ``http`` (one
exchange: bounded reads, answers and failures turned into results or errors), ``pacing``
(per-project pauses, spacing, request slots, back-off), ``oauth`` (service-account login)
and ``client`` (``AtlasClient``). The names below are its interface.
"""

from monitor.atlas.client import AtlasClient
from monitor.atlas.errors import (
    LOCAL_RESOURCE_ERRNOS,
    AtlasApiError,
    AtlasAuthError,
    AtlasBadResponseError,
    AtlasError,
    AtlasNotFoundError,
    AtlasRateLimitedError,
    AtlasRequestError,
    AtlasServerError,
    AtlasUnreachableError,
    LocalResourceError,
    describe_failure,
)
from monitor.atlas.http import JSON_PARSE_ERRORS, RequestObserver, parse_retry_after
from monitor.atlas.model import (
    API_ROOT,
    API_ROOT_V2,
    V2_MEDIA_TYPE,
    ApiKey,
    ApiVersion,
    EndpointRef,
    EndpointService,
    InterfaceEndpoint,
    Login,
    ServiceAccount,
    ServiceKey,
    service_path,
    services_path,
)

__all__ = [
    "API_ROOT",
    "API_ROOT_V2",
    "JSON_PARSE_ERRORS",
    "LOCAL_RESOURCE_ERRNOS",
    "V2_MEDIA_TYPE",
    "ApiKey",
    "ApiVersion",
    "AtlasApiError",
    "AtlasAuthError",
    "AtlasBadResponseError",
    "AtlasClient",
    "AtlasError",
    "AtlasNotFoundError",
    "AtlasRateLimitedError",
    "AtlasRequestError",
    "AtlasServerError",
    "AtlasUnreachableError",
    "EndpointRef",
    "EndpointService",
    "InterfaceEndpoint",
    "LocalResourceError",
    "Login",
    "RequestObserver",
    "ServiceAccount",
    "ServiceKey",
    "describe_failure",
    "parse_retry_after",
    "service_path",
    "services_path",
]
