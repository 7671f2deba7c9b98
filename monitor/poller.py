"""Polling many endpoints at once without letting one slow or broken endpoint hold up the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import structlog

from monitor.atlas import AtlasClient, AtlasError, InterfaceEndpoint, RequestObserver
from monitor.config import EndpointConfig, Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PollResult:
    """What one poll of one endpoint produced: a valid answer or the reason there is none."""

    endpoint: EndpointConfig
    answer: InterfaceEndpoint | None
    error: Exception | None

    @property
    def up(self) -> bool:
        return self.answer is not None


async def poll_endpoints(
    client: AtlasClient, endpoints: Sequence[EndpointConfig], concurrency: int
) -> list[PollResult]:
    """Poll every endpoint once; results come back in the order of ``endpoints``.

    A fixed pool of ``concurrency`` workers shares one iterator, so at most that many
    requests are in flight and a fleet of thousands costs thousands of coroutines never.
    """
    results: list[PollResult | None] = [None] * len(endpoints)
    pending = iter(enumerate(endpoints))
    async with asyncio.TaskGroup() as workers:
        for _ in range(min(concurrency, len(endpoints))):
            workers.create_task(_poll_worker(client, pending, results))
    return [result for result in results if result is not None]


async def _poll_worker(
    client: AtlasClient,
    pending: Iterator[tuple[int, EndpointConfig]],
    results: list[PollResult | None],
) -> None:
    for index, endpoint in pending:
        results[index] = await poll_endpoint(client, endpoint)


async def poll_endpoint(client: AtlasClient, endpoint: EndpointConfig) -> PollResult:
    """Never raises for a failed poll: the failure is the result."""
    try:
        answer = await client.get_interface_endpoint(endpoint.ref)
    except AtlasError as error:
        return PollResult(endpoint, None, error)
    except Exception as error:
        # A bug must cost one endpoint one poll, not the whole cycle.
        log.exception("poll_failed_unexpectedly", endpoint=str(endpoint.ref))
        return PollResult(endpoint, None, error)
    return PollResult(endpoint, answer, None)


def build_client(settings: Settings, observer: RequestObserver | None = None) -> AtlasClient:
    """The one place where configuration turns into an Atlas client."""
    atlas = settings.config.atlas
    return AtlasClient(
        base_url=atlas.base_url,
        public_key=settings.credentials.public_key,
        private_key=settings.credentials.private_key,
        timeout_seconds=atlas.timeout_seconds,
        max_retries=atlas.max_retries,
        max_connections=settings.config.poll.concurrency,
        observer=observer,
    )


async def poll_once(settings: Settings) -> list[PollResult]:
    """One read-only pass over every configured endpoint, for ``once`` and ``demo``."""
    async with build_client(settings) as client:
        return await poll_endpoints(
            client, settings.config.endpoints, settings.config.poll.concurrency
        )
