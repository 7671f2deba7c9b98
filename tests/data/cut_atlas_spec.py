"""Cut tests/data/atlas-spec-excerpt.yaml out of Atlas' published Admin API v2 spec.

The excerpt holds what the monitor depends on, so tests/test_spec_excerpt.py can hold the
client and the simulator to it: the routes the client calls (their get/post/delete only),
the token URL of service accounts, the API's introduction (which shows the token request
and a versioned Accept header), and every component those reference, transitively.
Other descriptions and documentation links are left out to keep it small; every other key
and value is Atlas' own. To refresh it from the Atlas CLI's vendored copy:

    git clone --depth 1 https://github.com/mongodb/mongodb-atlas-cli /tmp/atlas-cli
    python tests/data/cut_atlas_spec.py /tmp/atlas-cli/tools/internal/specs/spec.yaml \
        "$(git -C /tmp/atlas-cli rev-parse HEAD)" > tests/data/atlas-spec-excerpt.yaml
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

SOURCE = "https://github.com/mongodb/mongodb-atlas-cli"
SOURCE_PATH = "tools/internal/specs/spec.yaml"
ROUTES = {
    "/api/atlas/v2/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService": ["get"],
    "/api/atlas/v2/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService/"
    "{endpointServiceId}": ["get"],
    "/api/atlas/v2/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService/"
    "{endpointServiceId}/endpoint": ["post"],
    "/api/atlas/v2/groups/{groupId}/privateEndpoint/{cloudProvider}/endpointService/"
    "{endpointServiceId}/endpoint/{endpointId}": ["get", "delete"],
}
DROPPED_KEYS = frozenset({"description", "externalDocs", "x-xgen-docs-url", "summary", "tags"})


def _without_docs(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_docs(value) for key, value in node.items() if key not in DROPPED_KEYS}
    if isinstance(node, list):
        return [_without_docs(item) for item in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        mapping = node.get("discriminator", {}).get("mapping", {})
        found += [ref for ref in mapping.values() if isinstance(ref, str)]
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def cut(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {
        path: {method: _without_docs(spec["paths"][path][method]) for method in methods}
        for path, methods in ROUTES.items()
    }
    components: dict[str, dict[str, Any]] = {}
    pending = _refs(paths)
    while pending:
        _, _, kind, name = pending.pop().split("/")
        if name in components.get(kind, {}):
            continue
        component = _without_docs(spec["components"][kind][name])
        components.setdefault(kind, {})[name] = component
        pending.extend(_refs(component))
    service_accounts = spec["components"]["securitySchemes"]["ServiceAccounts"]
    components["securitySchemes"] = {"ServiceAccounts": _without_docs(service_accounts)}
    return {
        "openapi": spec["openapi"],
        # Kept whole: it shows the token request and the Accept header Atlas documents.
        "info": {key: spec["info"][key] for key in ("title", "version", "description")},
        "servers": spec.get("servers", []),
        "paths": paths,
        "components": {
            kind: dict(sorted(entries.items())) for kind, entries in sorted(components.items())
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line text as a literal block, as people write it."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


def main(spec_path: str, commit: str) -> None:
    with open(spec_path, encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    print(f"# Excerpt of the MongoDB Atlas Administration API v2 OpenAPI spec: {SOURCE}")
    print(f"# file {SOURCE_PATH} at commit {commit}")
    print("# (CC BY-NC-SA 3.0 US, as the spec's info.license says). Cut by")
    print("# tests/data/cut_atlas_spec.py: only the routes and components the monitor uses,")
    print("# without descriptions; do not edit by hand, cut it again from a newer spec.")
    print(
        yaml.dump(cut(spec), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True), end=""
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
