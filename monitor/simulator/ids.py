"""Cloud providers and the id formats the simulator checks paths, bodies and scenarios against."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator

from monitor.atlas import (
    AZURE_PRIVATE_ENDPOINT_ID,
    GCP_ENDPOINT_GROUP_NAME,
    INTERFACE_ENDPOINT_ID,
    OBJECT_ID,
)

CloudProvider = Literal["AWS", "AZURE", "GCP"]
CLOUD_PROVIDERS: tuple[CloudProvider, ...] = ("AWS", "AZURE", "GCP")


@dataclass(frozen=True)
class _IdFormat:
    pattern: re.Pattern[str]
    description: str

    def matches(self, value: str) -> bool:
        return self.pattern.fullmatch(value) is not None

    def check(self, value: str) -> str:
        """Pydantic validator form, so scenario files and paths share one definition."""
        if not self.matches(value):
            raise ValueError(f"must be {self.description}, got {value!r}")
        return value


_OBJECT_ID = _IdFormat(OBJECT_ID, "24 hexadecimal digits")
_INTERFACE_ENDPOINT_ID = _IdFormat(
    INTERFACE_ENDPOINT_ID, "'vpce-' followed by 8 or 17 lowercase hexadecimal digits"
)
_AZURE_ENDPOINT_ID = _IdFormat(
    AZURE_PRIVATE_ENDPOINT_ID,
    "an Azure resource id '/subscriptions/<uuid>/resourceGroups/<group>/providers/"
    "Microsoft.Network/privateEndpoints/<name>'",
)
_GCP_ENDPOINT_GROUP_NAME = _IdFormat(
    GCP_ENDPOINT_GROUP_NAME,
    "a GCP endpoint group name: a lowercase letter, then at most 62 lowercase letters, "
    "digits or '-', not ending with '-'",
)
_GCP_PROJECT_ID = _IdFormat(
    # Google Cloud's rule; every id of the spec's own pattern, p- and 24 characters, is one.
    re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]"),
    "a Google Cloud project id",
)
_ENDPOINT_ID_FORMATS: dict[str, _IdFormat] = {
    "AWS": _INTERFACE_ENDPOINT_ID,
    "AZURE": _AZURE_ENDPOINT_ID,
    "GCP": _GCP_ENDPOINT_GROUP_NAME,
}
_PATH_ID_FORMATS = {
    "groupId": _OBJECT_ID,
    "privateLinkId": _OBJECT_ID,
    "serviceId": _OBJECT_ID,
    "interfaceEndpointId": _INTERFACE_ENDPOINT_ID,
}
ObjectId = Annotated[str, AfterValidator(_OBJECT_ID.check)]
InterfaceEndpointId = Annotated[str, AfterValidator(_INTERFACE_ENDPOINT_ID.check)]


def _infer_provider(endpoint_id: str) -> CloudProvider:
    """``vpce-...`` is AWS, a path is an Azure resource id, anything else a GCP group name."""
    if endpoint_id.startswith("vpce-"):
        return "AWS"
    if endpoint_id.startswith("/"):
        return "AZURE"
    return "GCP"


def _canonical_endpoint_id(cloud_provider: str, endpoint_id: str) -> str:
    """Azure resource ids are case-insensitive, so they are keyed in lower case."""
    return endpoint_id.lower() if cloud_provider == "AZURE" else endpoint_id
