"""The client and the simulator held to Atlas' published v2 spec, so neither drifts from it.

tests/data/atlas-spec-excerpt.yaml is an excerpt of the spec the Atlas CLI vendors (source and
commit at its top; tests/data/cut_atlas_spec.py cuts it again from a newer one). These tests
fail when the client's status sets, id rules, media types or routes, or the simulator's
answers (status codes, content types, headers, bodies) disagree with it. Where the product
knowingly differs from the spec, the difference is named here, with the reason, and asserted.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from yarl import URL

from monitor.atlas import API_ROOT_V2, ApiVersion, EndpointRef, service_path, services_path
from monitor.atlas.oauth import TOKEN_PATH, token_url
from monitor.providers import (
    AZURE_PRIVATE_ENDPOINT_ID,
    ENDPOINT_STATUSES,
    INTERFACE_ENDPOINT_ID,
    OBJECT_ID,
    SERVICE_STATUSES,
    CloudProvider,
    ConnectionStatus,
    ServiceStatus,
)
from monitor.simulator import Scenario, ScenarioEndpoint
from tests.helpers import GROUP_ID, PRIVATE_KEY, PUBLIC_KEY, StartSimulator

EXCERPT_PATH = Path(__file__).parent / "data" / "atlas-spec-excerpt.yaml"
SERVICES_ROUTE = "/api/atlas/v2/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService"
SERVICE_ROUTE = SERVICES_ROUTE + "/{endpointServiceId}"
ENDPOINTS_ROUTE = SERVICE_ROUTE + "/endpoint"
ENDPOINT_ROUTE = ENDPOINTS_ROUTE + "/{endpointId}"

# Endpoint and service schemas per provider, by the discriminator mappings of the spec.
ENDPOINT_SCHEMA = {
    CloudProvider.AWS: "AWSInterfaceEndpoint",
    CloudProvider.AZURE: "AzurePrivateEndpoint",
    CloudProvider.GCP: "PrivateGCPEndpointGroup",
}
SERVICE_SCHEMA = {
    CloudProvider.AWS: "AWSPrivateLinkConnection",
    CloudProvider.AZURE: "AzurePrivateLinkConnection",
    CloudProvider.GCP: "GCPEndpointService",
}
STATUS_PROPERTY = {
    CloudProvider.AWS: "connectionStatus",
    CloudProvider.AZURE: "status",
    CloudProvider.GCP: "status",
}

# --- Where the product knowingly differs from the spec ---------------------------------------

EXTRA_ENDPOINT_STATUSES = {CloudProvider.AWS: {ConnectionStatus.NONE}}
"""AWS NONE is not in the v2 enum, but v1.0 answers it (its seed documents list it) and
Terraform's provider still waits on it for v2; showing it is truer than UNKNOWN."""
SPEC_ERRATA = {
    ("AWSPrivateLinkConnection", "interfaceEndpoints"): "items are the endpoints' vpce ids, as "
    "in v1.0 and as discovery needs them, not the 24-hex pattern the spec copies from 'id'",
    ("ApiError", "parameters"): "items are strings in Atlas' recorded answers "
    '(e.g. ["cluster-989", "b0123456789abcdef012345b"]), not objects',
}
"""Properties whose items the spec describes unlike what Atlas answers: their items are not
checked against it."""
UNLISTED_STATUSES = {406: "Atlas answers INVALID_VERSION_DATE for a missing or unknown version"}
"""HTTP statuses Atlas sends for these routes that their responses do not list."""


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXCERPT_PATH.read_text(encoding="utf-8"))
    return document


def schema(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["components"]["schemas"][name]
    return found


def resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """A ``$ref`` (to anywhere in components) replaced by what it names."""
    while "$ref" in node:
        _, _, kind, name = node["$ref"].split("/")
        node = spec["components"][kind][name]
    return dict(node)


def enum_of(spec: Mapping[str, Any], schema_name: str, prop: str) -> set[str]:
    return set(schema(spec, schema_name)["properties"][prop]["enum"])


def operation(spec: Mapping[str, Any], route: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["paths"][route][method]
    return found


# --- A small OpenAPI 3.0 schema check: types, required, enums, patterns, discriminators ------

_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def problems(
    spec: Mapping[str, Any], node: Mapping[str, Any], value: object, where: str = "$"
) -> Iterator[str]:
    """Every way ``value`` breaks the schema ``node``. Properties must be declared (the spec
    lists what Atlas sends); null is taken for any property that is not required, as Atlas'
    recorded answers send ``"errorMessage": null`` while the spec marks few as nullable."""
    name = node.get("$ref", "").rpartition("/")[2]
    node = resolve(spec, node)
    if "discriminator" in node and isinstance(value, dict):
        target = node["discriminator"]["mapping"].get(
            value.get(node["discriminator"]["propertyName"])
        )
        if target is None:
            yield f"{where}: no schema for discriminator value"
            return
        yield from problems(spec, {"$ref": target}, value, where)
        return
    expected = _TYPES.get(node.get("type", ""))
    if expected is not None and (
        not isinstance(value, expected) or (isinstance(value, bool) and node["type"] != "boolean")
    ):
        yield f"{where}: {value!r} is not of type {node['type']}"
        return
    if "enum" in node and value not in node["enum"]:
        yield f"{where}: {value!r} is not one of {node['enum']}"
    if "pattern" in node and isinstance(value, str) and not re.search(node["pattern"], value):
        yield f"{where}: {value!r} does not match {node['pattern']}"
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for required in node.get("required", []):
            if required not in value:
                yield f"{where}: {required} is required"
        for key, item in value.items():
            if key not in properties:
                yield f"{where}: {key} is not in the spec"
            elif item is not None or key in node.get("required", []):
                prop = dict(properties[key])
                if (name, key) in SPEC_ERRATA:
                    prop.pop("items", None)
                yield from problems(spec, prop, item, f"{where}.{key}")
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            yield from problems(spec, node["items"], item, f"{where}[{index}]")


def assert_valid(spec: Mapping[str, Any], node: Mapping[str, Any], value: object) -> None:
    assert list(problems(spec, node, value)) == [], json.dumps(value)


def test_the_excerpt_names_its_source_and_commit() -> None:
    header = EXCERPT_PATH.read_text(encoding="utf-8").splitlines()[:2]
    assert "https://github.com/mongodb/mongodb-atlas-cli" in header[0]
    assert re.search(r"tools/internal/specs/spec\.yaml at commit [0-9a-f]{40}$", header[1])


def test_the_schema_check_catches_what_it_is_for(spec: dict[str, Any]) -> None:
    """The check itself, on the spec's own words, so a weakened check cannot pass silently."""
    endpoint = {"$ref": "#/components/schemas/PrivateLinkEndpoint"}
    good = {"cloudProvider": "GCP", "endpointGroupName": "a", "status": "DELETED"}
    assert list(problems(spec, endpoint, good)) == []
    assert list(problems(spec, endpoint, {**good, "status": "NONE"}))
    assert list(problems(spec, endpoint, {**good, "made_up": 1}))
    assert list(problems(spec, endpoint, {"endpointGroupName": "a"}))
    service = {"$ref": "#/components/schemas/EndpointService"}
    assert list(
        problems(spec, service, {"cloudProvider": "AWS", "interfaceEndpoints": [], "id": "X"})
    )


# --- Status sets --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(CloudProvider))
def test_endpoint_statuses_are_the_spec_enum_of_the_provider(
    spec: dict[str, Any], provider: CloudProvider
) -> None:
    ours = set(ENDPOINT_STATUSES[provider]) - {ConnectionStatus.UNKNOWN}
    enum = enum_of(spec, ENDPOINT_SCHEMA[provider], STATUS_PROPERTY[provider])
    assert ours == enum | EXTRA_ENDPOINT_STATUSES.get(provider, set())
    assert ENDPOINT_STATUSES[provider][-1] is ConnectionStatus.UNKNOWN  # ours, for the rest


@pytest.mark.parametrize("provider", list(CloudProvider))
def test_endpoint_service_statuses_are_the_spec_enum_of_the_provider(
    spec: dict[str, Any], provider: CloudProvider
) -> None:
    ours = set(SERVICE_STATUSES[provider]) - {ServiceStatus.UNKNOWN}
    assert ours == enum_of(spec, SERVICE_SCHEMA[provider], "status")
    assert ours == enum_of(spec, "EndpointService", "status")


def test_every_status_value_the_spec_names_is_parsed_as_itself(spec: dict[str, Any]) -> None:
    for provider in CloudProvider:
        for raw in enum_of(spec, ENDPOINT_SCHEMA[provider], STATUS_PROPERTY[provider]):
            assert ConnectionStatus.parse(raw, provider).value == raw
        for raw in enum_of(spec, SERVICE_SCHEMA[provider], "status"):
            assert ServiceStatus.parse(raw, provider).value == raw


# --- Id rules -----------------------------------------------------------------------------


def spec_pattern(spec: Mapping[str, Any], schema_name: str, prop: str) -> str:
    found: str = schema(spec, schema_name)["properties"][prop]["pattern"]
    return found


def endpoint_id_path_pattern(spec: Mapping[str, Any]) -> str:
    (parameter,) = [
        parameter
        for parameter in operation(spec, ENDPOINT_ROUTE, "get")["parameters"]
        if parameter.get("name") == "endpointId"
    ]
    found: str = parameter["schema"]["pattern"]
    return found


def test_object_ids_follow_the_spec(spec: dict[str, Any]) -> None:
    pattern = spec_pattern(spec, "EndpointService", "id")
    example = schema(spec, "EndpointService")["properties"]["id"]["example"]
    for conforming in (example, "0" * 24, "abcdef0123456789abcdef01"):
        assert re.fullmatch(pattern, conforming)
        assert OBJECT_ID.fullmatch(conforming)
    for wrong in ("0" * 23, "0" * 25, "g" * 24, "32b6e34b3d91647abb20e7b8 "):
        assert not re.fullmatch(pattern, wrong)
        assert not OBJECT_ID.fullmatch(wrong)
    # Chosen otherwise: upper case is taken from configs and answers, and lowered before use.
    assert OBJECT_ID.fullmatch(example.upper())
    assert not re.fullmatch(pattern, example.upper())


def test_aws_endpoint_ids_follow_the_spec(spec: dict[str, Any]) -> None:
    pattern = schema(spec, "CreateAWSEndpointRequest")["allOf"][1]["properties"]["id"]["pattern"]
    example = schema(spec, "CreateAWSEndpointRequest")["allOf"][1]["properties"]["id"]["example"]
    for conforming in (example, "vpce-0b9c5701325cb15dd", "vpce-" + "f" * 17):
        assert re.search(pattern, conforming)
        assert INTERFACE_ENDPOINT_ID.fullmatch(conforming)
        assert re.search(endpoint_id_path_pattern(spec), conforming)
    for wrong in (
        "vpce-" + "0" * 16,
        "vpce-" + "0" * 18,
        "vpce-0B9C5701325CB15DD",
        "vpc-" + "0" * 17,
    ):
        assert not re.search(pattern, wrong)
        assert not INTERFACE_ENDPOINT_ID.fullmatch(wrong)
    # Chosen otherwise: the 8-digit ids of endpoints made before AWS lengthened its ids.
    assert INTERFACE_ENDPOINT_ID.fullmatch("vpce-0b9c5701")
    assert not re.search(pattern, "vpce-0b9c5701")


AZURE_PREFIX = "/subscriptions/cba6d9c6-1d3f-3c11-03cb-c705d895e636/resourceGroups/"
AZURE_CONFORMING = [
    AZURE_PREFIX + "payments-rg/providers/Microsoft.Network/privateEndpoints/payments-pe",
    AZURE_PREFIX + "rg(prod)/providers/Microsoft.Network/privateEndpoints/pe(1).x_y",
    AZURE_PREFIX.replace("resourceGroups", "resourcegroups")
    + "a/providers/Microsoft.Network/privateEndpoints/b",
]
AZURE_NON_CONFORMING = [
    AZURE_PREFIX + "rg/providers/Microsoft.Network/privateEndpoints/",
    AZURE_PREFIX + "/providers/Microsoft.Network/privateEndpoints/pe",
    AZURE_PREFIX + "rg/providers/Microsoft.Network/privateLinkServices/pe",
    AZURE_PREFIX + "r g/providers/Microsoft.Network/privateEndpoints/pe",
    AZURE_PREFIX + "rg/providers/Microsoft.Network/privateEndpoints/pe/extra",
    "/subscriptions/not-a-uuid/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe",
]


def test_azure_endpoint_ids_follow_the_spec(spec: dict[str, Any]) -> None:
    listed = schema(spec, "AzurePrivateLinkConnection")["properties"]["privateEndpoints"]["items"][
        "pattern"
    ]
    path_pattern = endpoint_id_path_pattern(spec)
    examples = [
        schema(spec, "AzurePrivateEndpoint")["properties"]["privateEndpointResourceId"]["example"],
        schema(spec, "CreateAzureEndpointRequest")["allOf"][1]["properties"]["id"]["example"],
    ]
    for conforming in examples + AZURE_CONFORMING:
        assert re.fullmatch(listed, conforming), conforming
        assert AZURE_PRIVATE_ENDPOINT_ID.fullmatch(conforming), conforming
        # In a path the id goes URL-encoded, its slashes as %2F as the spec's parameter
        # pattern shows; the client encodes ( and ) too, as the Go SDK's url.PathEscape does.
        assert re.fullmatch(path_pattern, conforming.replace("/", "%2F")), conforming
        ref = EndpointRef(GROUP_ID, "0" * 24, conforming, CloudProvider.AZURE)
        assert ApiVersion.V2.endpoint_path(ref).endswith("/" + quote(conforming, safe=""))
    for wrong in AZURE_NON_CONFORMING:
        assert not re.fullmatch(listed, wrong)
        assert not AZURE_PRIVATE_ENDPOINT_ID.fullmatch(wrong)


def test_gcp_endpoint_group_names_have_no_spec_pattern(spec: dict[str, Any]) -> None:
    """The product uses Google Cloud's resource-name rule; should the spec add its own
    pattern, this fails so that the two are compared."""
    for schema_name in ("PrivateGCPEndpointGroup", "CreateGCPEndpointGroupRequest"):
        node = schema(spec, schema_name)
        properties = node.get("properties") or node["allOf"][1]["properties"]
        assert "pattern" not in properties["endpointGroupName"]


# --- Media types, routes and the token URL -----------------------------------------------


def test_the_client_speaks_the_spec_media_type_on_every_route(spec: dict[str, Any]) -> None:
    for route, methods in spec["paths"].items():
        for method, details in methods.items():
            answers = details["responses"]
            success = answers.get("200") or answers["204"]
            assert list(success["content"]) == [ApiVersion.V2.media_type], (route, method)
            if "requestBody" in details:
                assert list(details["requestBody"]["content"]) == [ApiVersion.V2.media_type]
            for status, answer in answers.items():
                if status.startswith(("4", "5")):
                    assert list(resolve(spec, answer)["content"]) == ["application/json"]


def test_the_client_calls_the_spec_routes(spec: dict[str, Any]) -> None:
    ref = EndpointRef(GROUP_ID, "1" * 24, "vpce-0b9c5701325cb15dd", CloudProvider.GCP)
    ids = {"groupId": GROUP_ID, "cloudProvider": "GCP", "endpointServiceId": "1" * 24}
    ids["endpointId"] = ref.interface_endpoint_id
    ours = {
        SERVICES_ROUTE: API_ROOT_V2 + services_path(GROUP_ID, CloudProvider.GCP),
        SERVICE_ROUTE: API_ROOT_V2 + service_path(GROUP_ID, CloudProvider.GCP, "1" * 24),
        ENDPOINTS_ROUTE: API_ROOT_V2 + ApiVersion.V2.endpoints_path(ref),
        ENDPOINT_ROUTE: API_ROOT_V2 + ApiVersion.V2.endpoint_path(ref),
    }
    assert set(ours) == set(spec["paths"])
    for route, path in ours.items():
        assert route.format(**ids) == path


def test_the_token_url_is_the_specs(spec: dict[str, Any]) -> None:
    flows = spec["components"]["securitySchemes"]["ServiceAccounts"]["flows"]
    (server,) = spec["servers"]
    assert token_url(server["url"]) == flows["clientCredentials"]["tokenUrl"]
    assert flows["clientCredentials"]["tokenUrl"].endswith(TOKEN_PATH)


# --- The simulator's answers ---------------------------------------------------------------

SERVICE_IDS = {
    CloudProvider.AWS: "65a1b2c3d4e5f60718293a4a",
    CloudProvider.AZURE: "65a1b2c3d4e5f60718293a4b",
    CloudProvider.GCP: "65a1b2c3d4e5f60718293a4c",
}
EXISTING = {
    CloudProvider.AWS: "vpce-0b9c5701325cb15dd",
    CloudProvider.AZURE: AZURE_CONFORMING[1],
    CloudProvider.GCP: "analytics-psc",
}
CREATE_BODIES: dict[CloudProvider, dict[str, Any]] = {
    CloudProvider.AWS: {"id": "vpce-3bf78b0ddee411ba1"},
    CloudProvider.AZURE: {"id": AZURE_CONFORMING[0], "privateEndpointIPAddress": "10.0.0.4"},
    CloudProvider.GCP: {
        "endpointGroupName": "ml-psc",
        "gcpProjectId": "p-fdeeb3e43b8e733e5ab627b1",
        "endpoints": [{"endpointName": "ml-psc-0", "ipAddress": "10.0.0.5"}],
    },
}
ABSENT = {
    CloudProvider.AWS: "vpce-" + "e" * 17,
    CloudProvider.AZURE: AZURE_CONFORMING[2],
    CloudProvider.GCP: "gone-psc",
}
CREATE_SCHEMAS = {
    CloudProvider.AWS: "CreateAWSEndpointRequest",
    CloudProvider.AZURE: "CreateAzureEndpointRequest",
    CloudProvider.GCP: "CreateGCPEndpointGroupRequest",
}


def version_in_spec_example(spec: Mapping[str, Any]) -> str:
    """The media type the spec's own curl example sends (a later date than the routes')."""
    match = re.search(
        r"Accept: (application/vnd\.atlas\.[-0-9]+\+json)", spec["info"]["description"]
    )
    assert match is not None
    return match[1]


class Checker:
    """Raw HTTP to the simulator, each answer held to the operation the spec gives."""

    def __init__(self, spec: dict[str, Any], session: aiohttp.ClientSession, base_url: str):
        self.spec = spec
        self.session = session
        self.base_url = base_url

    async def call(
        self,
        route: str,
        method: str,
        ids: Mapping[str, str],
        body: object = None,
        *,
        accept: str = ApiVersion.V2.media_type,
    ) -> tuple[int, Any]:
        encoded = {name: quote(value, safe="") for name, value in ids.items()}
        url = self.base_url + route.format(**encoded)
        headers = {"Accept": accept}
        data = None
        details = operation(self.spec, route, method)
        if body is not None:
            (media_type,) = details["requestBody"]["content"]
            headers["Content-Type"] = media_type
            data = json.dumps(body)
        async with self.session.request(
            method.upper(), URL(url, encoded=True), headers=headers, data=data
        ) as response:
            text = await response.text()
            status, content_type = response.status, response.headers.get("Content-Type", "")
            answer_headers = response.headers
        document = json.loads(text) if text else None
        if status in UNLISTED_STATUSES:
            assert content_type == "application/json"
            assert_valid(self.spec, {"$ref": "#/components/schemas/ApiError"}, document)
            return status, document
        assert str(status) in details["responses"], (method, route, status)
        declared = resolve(self.spec, details["responses"][str(status)])
        (media_type,) = declared.get("content", {None: None})
        if status == 204:
            assert text == ""
            return status, None
        assert content_type.partition(";")[0] == media_type, (status, content_type)
        assert_valid(self.spec, declared["content"][media_type]["schema"], document)
        if status >= 400:
            assert answer_headers["X-Error-Code"] == document["errorCode"]
        for name in declared.get("headers", {}):  # all there: the scenario sets a rate limit
            assert re.fullmatch(r"\d+", answer_headers[name]), (name, answer_headers)
        return status, document


RATE_LIMIT = 20
"""Per minute: more than one test's requests, so only the throttling test meets a 429."""


@pytest.fixture
async def checker(spec: dict[str, Any], start_simulator: StartSimulator) -> AsyncIterator[Checker]:
    scenario = Scenario(
        rate_limit_per_minute=RATE_LIMIT,
        endpoints=[
            ScenarioEndpoint(
                group_id=GROUP_ID,
                private_link_id=SERVICE_IDS[provider],
                cloud_provider=provider.value,
                interface_endpoint_id=EXISTING[provider],
                status=status,
            )
            for provider, status in (
                (CloudProvider.AWS, "PENDING_ACCEPTANCE"),
                (CloudProvider.AZURE, "FAILED"),
                (CloudProvider.GCP, "VERIFIED"),
            )
        ],
    )
    _, base_url = await start_simulator(scenario)
    digest = aiohttp.DigestAuthMiddleware(PUBLIC_KEY, PRIVATE_KEY, preemptive=True)
    async with aiohttp.ClientSession(middlewares=(digest,)) as session:
        yield Checker(spec, session, base_url)


@pytest.mark.parametrize("provider", list(CloudProvider))
async def test_the_simulators_answers_follow_the_spec(
    checker: Checker, spec: dict[str, Any], provider: CloudProvider
) -> None:
    service = {"groupId": GROUP_ID, "cloudProvider": provider.value}
    service_ids = {**service, "endpointServiceId": SERVICE_IDS[provider]}
    existing = {**service_ids, "endpointId": EXISTING[provider]}
    new_id = next(iter(CREATE_BODIES[provider].values()))
    created_ids = {**service_ids, "endpointId": new_id}
    create_schema = schema(spec, CREATE_SCHEMAS[provider])
    assert_valid(spec, create_schema["allOf"][1], CREATE_BODIES[provider])
    assert set(create_schema["required"]) <= set(CREATE_BODIES[provider])

    listed = await checker.call(SERVICES_ROUTE, "get", service)
    one = await checker.call(SERVICE_ROUTE, "get", service_ids)
    example_version = await checker.call(
        SERVICE_ROUTE, "get", service_ids, accept=version_in_spec_example(spec)
    )
    read = await checker.call(ENDPOINT_ROUTE, "get", existing)
    created = await checker.call(ENDPOINTS_ROUTE, "post", service_ids, CREATE_BODIES[provider])
    conflict = await checker.call(ENDPOINTS_ROUTE, "post", service_ids, CREATE_BODIES[provider])
    later = await checker.call(ENDPOINT_ROUTE, "get", created_ids)
    deleted = await checker.call(ENDPOINT_ROUTE, "delete", existing)
    missing = await checker.call(
        ENDPOINT_ROUTE, "get", {**existing, "endpointId": ABSENT[provider]}
    )
    bad_body = await checker.call(ENDPOINTS_ROUTE, "post", service_ids, {"id": 1})
    unversioned = await checker.call(SERVICE_ROUTE, "get", service_ids, accept="application/json")

    assert listed[0] == 200
    assert [item["id"] for item in listed[1]] == [SERVICE_IDS[provider]]
    assert one[0] == 200
    # The spec gives regionName no enum; Atlas' recorded answers spell regions EU_WEST_1.
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", one[1]["regionName"])
    assert read[0] == 200
    assert created[0] == 200
    status_property = STATUS_PROPERTY[provider]
    assert created[1][status_property] in enum_of(spec, ENDPOINT_SCHEMA[provider], status_property)
    assert conflict[0] == 409
    assert later[0] == 200
    assert deleted == (204, None)
    assert missing[0] == 404
    assert missing[1]["errorCode"] == "RESOURCE_NOT_FOUND"
    assert bad_body[0] == 400
    assert example_version == one
    assert unversioned[0] == 406
    assert unversioned[1]["errorCode"] == "INVALID_VERSION_DATE"


async def test_a_throttled_answer_follows_the_spec(checker: Checker) -> None:
    ids = {"groupId": GROUP_ID, "cloudProvider": "AWS"}
    statuses = [(await checker.call(SERVICES_ROUTE, "get", ids))[0] for _ in range(RATE_LIMIT + 1)]
    assert statuses == [200] * RATE_LIMIT + [429]
