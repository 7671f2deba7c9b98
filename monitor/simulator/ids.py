"""The id rules the simulator checks paths, bodies and scenarios against: the monitor's own
(``monitor.providers``), so the fake and the client cannot disagree, plus the GCP project
id that only a GCP POST body carries."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from monitor.providers import OBJECT_ID_RULE, PROVIDERS, CloudProvider, IdRule

_GCP_PROJECT_ID = IdRule(
    # Google Cloud's rule; every id of the spec's own pattern, p- and 24 characters, is one.
    re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]"),
    "a Google Cloud project id",
)
_PATH_ID_FORMATS = {
    "groupId": OBJECT_ID_RULE,
    "privateLinkId": OBJECT_ID_RULE,
    "serviceId": OBJECT_ID_RULE,
    # v1.0's path: it serves AWS interface endpoints only.
    "interfaceEndpointId": PROVIDERS[CloudProvider.AWS].endpoint_id,
}
ObjectId = Annotated[str, AfterValidator(OBJECT_ID_RULE.check)]
