"""How fast the client asks Atlas, project by project.

Atlas throttles per project (group), so everything here is kept per project: a pause after a
429 that holds back all of the project's requests, an even spacing of its requests (a
configured rate, or the refill rate while its RateLimit headers say the bucket runs low),
and a turn, so that a project's requests wait for their project before they take one of
the session's request slots, never while holding one. Back-off between retries is here too.
All times are ``time.monotonic``, which tests replace with a virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import structlog
from multidict import CIMultiDictProxy

from monitor.atlas.errors import AtlasError, AtlasRateLimitedError
from monitor.atlas.http import count_header

log = structlog.get_logger(__name__)

# A Retry-After longer than this is not waited for inside one poll: the caller gets the
# RateLimitedError at once and the next poll tries again.
MAX_RETRY_AFTER_SECONDS: Final = 60.0
MAX_RATE_LIMIT_SPACING_SECONDS: Final = 60.0
"""The widest spacing RateLimit headers may impose between a project's requests: one request
a minute, the slowest refill Atlas' per-minute buckets have (RateLimit-Limit: 1)."""
BACKOFF_BASE_SECONDS: Final = 0.5
BACKOFF_CAP_SECONDS: Final = 30.0
RATE_LIMIT_LOW_SHARE: Final = 0.1
"""Below this share of RateLimit-Limit left, a project's requests are slowed down."""


def backoff_ceiling(attempt: int) -> float:
    """The longest back-off before retry ``attempt + 1``: exponential from 0.5 s, capped."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**attempt)


def project_of(path: str) -> str:
    """The group id of an API path: every path this client uses is /groups/{groupId}/..."""
    return path.split("/", 3)[2]


class ProjectPacer:
    """The pacing state of one client: pauses, spacing and slow-downs outlive a session;
    request slots and turns belong to the session ``open`` starts."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_requests_per_minute: int | None,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._max_connections = max_connections
        self._sleep = sleep
        self._request_slots: asyncio.Semaphore | None = None
        """``max_connections`` requests in flight at most; taken only once a request is due."""
        self._project_turns: dict[str, asyncio.Lock] = {}
        """Project (group) id -> held by the one request of the project that is next to go."""
        self._project_pauses: dict[str, float] = {}
        """Project (group) id -> monotonic time before which no request for it is sent."""
        self._spacing = 60.0 / max_requests_per_minute if max_requests_per_minute else 0.0
        self._slowed_projects: dict[str, float] = {}
        """Project (group) id -> spacing its RateLimit headers call for while it runs low."""
        self._next_slots: dict[str, float] = {}
        """Project (group) id -> monotonic time its next request may start, when paced."""

    def open(self) -> None:
        """A new session: fresh request slots (bound to the running loop) and turns."""
        self._request_slots = asyncio.Semaphore(self._max_connections)
        self._project_turns = {}

    def pause_project(self, path: str, attempt: int, error: AtlasError) -> None:
        """Atlas throttles per project, so one 429 holds back every request for that project,
        not just the one that got it: the rest of a concurrent cycle would only earn more."""
        group_id = project_of(path)
        pause = getattr(error, "retry_after", None)
        if pause is None:
            pause = backoff_ceiling(attempt)
        until = time.monotonic() + pause
        if until > self._project_pauses.get(group_id, 0.0):
            self._project_pauses[group_id] = until
            log.warning("atlas_project_throttled", group_id=group_id, pause_seconds=pause)

    @contextlib.asynccontextmanager
    async def request_slot(
        self, method: str, path: str, *, respect_pause: bool
    ) -> AsyncIterator[None]:
        """Hold one of the ``max_connections`` request slots for one exchange, taken once the
        project's turn has come, its pause is over and its pace allows, never before.

        A project's requests line up for their turn; only the one whose turn it is waits out
        the project's pause and spacing, then for a request slot. So no request holds a
        slot while its project keeps it waiting: a slot that would idle while the other
        projects' requests could go out (a whole cycle held hostage to one project). Each
        project has at most one request waiting for a slot, so busy slots go round the
        projects in turn.
        """
        if self._request_slots is None:
            raise RuntimeError("ProjectPacer used before open()")
        group_id = project_of(path)
        async with self._project_turns.setdefault(group_id, asyncio.Lock()):
            if respect_pause:
                await self._respect_project_pause(method, path)
            await self._pace(group_id)
            await self._request_slots.acquire()
        try:
            yield
        finally:
            self._request_slots.release()

    async def _respect_project_pause(self, method: str, path: str) -> None:
        """Wait out the project's pause, or fail at once if it is longer than a poll waits."""
        group_id = project_of(path)
        until = self._project_pauses.get(group_id)
        if until is None:
            return
        remaining = until - time.monotonic()
        if remaining <= 0:
            del self._project_pauses[group_id]
            return
        if remaining > MAX_RETRY_AFTER_SECONDS:
            raise AtlasRateLimitedError(
                method=method,
                path=path,
                status=429,
                error_code=None,
                detail=f"not sent: Atlas throttles project {group_id} for {remaining:.0f} s more",
                retry_after=remaining,
            )
        await self._sleep(remaining)

    async def _pace(self, group_id: str) -> None:
        """Space the project's requests evenly, so a cycle of many endpoints in one project
        reaches Atlas as a steady trickle under its limit instead of a burst that earns 429s.

        Slots follow a schedule: a request that had to wait for a request slot starts late,
        but the next one keeps its own slot, so such delays never add up over a cycle."""
        spacing = max(self._spacing, self._slowed_projects.get(group_id, 0.0))
        if not spacing:
            return
        now = time.monotonic()
        slot = max(now, self._next_slots.get(group_id, now))
        self._next_slots[group_id] = slot + spacing
        if slot > now:
            await self._sleep(slot - now)

    def note_rate_limit(self, path: str, headers: CIMultiDictProxy[str]) -> None:
        """Slow a project down while Atlas says its bucket runs low, before it answers 429.

        Atlas' buckets refill per minute, so while fewer than a tenth of ``RateLimit-Limit``
        requests remain, the project's requests are spaced to the refill rate.
        """
        limit = count_header(headers, "RateLimit-Limit")
        remaining = count_header(headers, "RateLimit-Remaining")
        if not limit or remaining is None:
            return
        group_id = project_of(path)
        if remaining <= max(1.0, limit * RATE_LIMIT_LOW_SHARE):
            spacing = min(60.0 / limit, MAX_RATE_LIMIT_SPACING_SECONDS)
            if group_id not in self._slowed_projects:
                log.warning(
                    "atlas_project_slowing_down",
                    group_id=group_id,
                    rate_limit=limit,
                    rate_limit_remaining=remaining,
                    spacing_seconds=round(spacing, 3),
                )
            self._slowed_projects[group_id] = spacing
        elif self._slowed_projects.pop(group_id, None) is not None:
            log.info(
                "atlas_project_rate_recovered", group_id=group_id, rate_limit_remaining=remaining
            )
