"""Every way a call to Atlas can fail, as one ``AtlasError`` type each, classified by HTTP status
as Atlas documents it, with Atlas' own errorCode and detail kept for logs and alerts."""

from __future__ import annotations

import errno
from collections.abc import Mapping

from monitor.logs import masked


class AtlasError(Exception):
    """Any failure to get a valid answer from Atlas for one call."""

    def __init__(self, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {message}")
        self.summary = message
        """What went wrong, without the request; for places that show the endpoint already."""
        self.method = method
        self.path = path


class AtlasApiError(AtlasError):
    """Atlas answered with an error status; ``error_code`` and ``detail`` are Atlas' words."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status: int,
        error_code: str | None,
        detail: str | None,
        retry_after: float | None = None,
    ) -> None:
        summary = " ".join(str(part) for part in (status, error_code) if part)
        super().__init__(f"{summary}: {detail}" if detail else summary, method=method, path=path)
        self.status = status
        self.error_code = error_code
        self.detail = detail
        self.retry_after = retry_after


class AtlasNotFoundError(AtlasApiError):
    """404: the endpoint (or its project or private link) does not exist in Atlas."""


class AtlasAuthError(AtlasApiError):
    """401 or 403: wrong key, missing role, or the caller's IP is not on the access list."""


class AtlasRateLimitedError(AtlasApiError):
    """429: Atlas throttled us; ``retry_after`` says for how long, when it says."""


class AtlasServerError(AtlasApiError):
    """5xx: Atlas (or something in front of it) failed."""


class AtlasRequestError(AtlasApiError):
    """Any other 4xx, such as a malformed id or a conflicting POST."""


class AtlasBadResponseError(AtlasError):
    """Atlas answered, but not with what its API promises (shape, type, size, status)."""


class AtlasUnreachableError(AtlasError):
    """No answer at all: timeout, refused or dropped connection.

    ``request_sent`` is False only when the connection was never established, which is the
    one case where repeating a non-idempotent request is known to be safe.
    """

    def __init__(self, message: str, *, method: str, path: str, request_sent: bool) -> None:
        super().__init__(message, method=method, path=path)
        self.request_sent = request_sent


class LocalResourceError(AtlasUnreachableError):
    """No answer because this host ran out of something the request needed (file
    descriptors, buffers, memory) before it could leave: it says nothing about Atlas, so it
    must never count towards the ``unreachable`` alert. ``cause`` is the errno's name."""

    def __init__(self, message: str, *, method: str, path: str, cause: str) -> None:
        super().__init__(message, method=method, path=path, request_sent=False)
        self.cause = cause


LOCAL_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""The errors asyncio itself treats as "out of system resource" (see its accept loop)."""


def describe_failure(error: BaseException) -> str:
    """What went wrong, without the request: for places that already name the endpoint.
    Every known secret is masked, as the text is kept in the state file too, and Atlas' (or
    a proxy's) words in it may echo the request that carried the key."""
    if isinstance(error, AtlasError):
        return str(masked(error.summary))
    return str(masked(f"{type(error).__name__}: {error}"))


ERROR_BY_STATUS: Mapping[int, type[AtlasApiError]] = {
    401: AtlasAuthError,
    403: AtlasAuthError,
    404: AtlasNotFoundError,
    429: AtlasRateLimitedError,
}
