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


The package: ``scenario`` (the file format), ``faults``, ``state`` (time-derived state and
stats), ``auth`` (Digest, OAuth tokens, rate limits), ``http`` (Atlas' answer conventions),
``documents`` (request and resource bodies), ``routes`` (paths and keys) and ``app`` (the
``Simulator`` itself). Only the names below are its interface; the daemon's ``run`` never
imports this package (``cli`` imports it lazily for ``simulate`` and ``demo``).
"""

from monitor.atlas import API_ROOT
from monitor.providers import CloudProvider
from monitor.simulator.app import Simulator
from monitor.simulator.auth import OAUTH_TOKEN_PATH
from monitor.simulator.faults import Fault
from monitor.simulator.http import API_V2_ROOT, V2_MEDIA_TYPE
from monitor.simulator.scenario import (
    Scenario,
    ScenarioEndpoint,
    ScenarioError,
    ScenarioService,
    ServiceTimelineStep,
    TimelineStep,
    default_scenario,
    load_scenario,
)
from monitor.simulator.state import DROPPED, SimulatorStats

__all__ = [
    "API_ROOT",
    "API_V2_ROOT",
    "DROPPED",
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
