"""Polling many endpoints at once without letting one slow or broken endpoint hold up the
rest, and the scheduler that repeats it every ``poll.interval_seconds``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.add_missing import add_if_missing
from monitor.alerts import emit_alert
from monitor.atlas import (
    AtlasClient,
    AtlasError,
    AtlasNotFoundError,
    ConnectionStatus,
    EndpointRef,
    InterfaceEndpoint,
    RequestObserver,
    describe_failure,
)
from monitor.config import EndpointConfig, MonitorConfig, Settings, endpoint_identity
from monitor.metrics import MonitorMetrics, Snapshot
from monitor.state import AddPolicy, EndpointState, Observation, advance, forget

log = structlog.get_logger(__name__)

# How long stopping waits for a cancelled cycle to unwind before closing the session.
STOP_TIMEOUT_SECONDS = 5.0

Item = TypeVar("Item")


@dataclass(frozen=True)
class PollResult:
    """What one poll of one endpoint produced: a valid answer or the reason there is none."""

    endpoint: EndpointConfig
    answer: InterfaceEndpoint | None
    error: Exception | None

    @property
    def up(self) -> bool:
        return self.answer is not None

    def observation(self) -> Observation:
        if self.answer is not None:
            return Observation.answered(self.answer)
        if isinstance(self.error, AtlasNotFoundError):
            return Observation.not_found()
        assert self.error is not None
        return Observation.failed(describe_failure(self.error))


async def for_each_bounded(
    items: Iterable[Item], concurrency: int, work: Callable[[Item], Awaitable[None]]
) -> None:
    """Run ``work`` on every item with at most ``concurrency`` running at once.

    A fixed pool of workers shares one iterator, so a fleet of thousands never becomes
    thousands of coroutines, and every task is owned by the TaskGroup (none is orphaned).
    """
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    async with asyncio.TaskGroup() as workers:
        for _ in range(concurrency):
            workers.create_task(worker())


async def poll_endpoints(
    client: AtlasClient, endpoints: Sequence[EndpointConfig], concurrency: int
) -> list[PollResult]:
    """Poll every endpoint once; results come back in the order of ``endpoints``."""
    results: dict[int, PollResult] = {}

    async def poll(indexed: tuple[int, EndpointConfig]) -> None:
        index, endpoint = indexed
        results[index] = await poll_endpoint(client, endpoint)

    await for_each_bounded(enumerate(endpoints), concurrency, poll)
    return [results[index] for index in range(len(endpoints))]


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
        max_requests_per_minute=settings.config.poll.max_requests_per_minute,
        observer=observer,
    )


async def poll_once(settings: Settings) -> list[PollResult]:
    """One read-only pass over every configured endpoint, for ``once``."""
    async with build_client(settings) as client:
        return await poll_endpoints(
            client, settings.config.endpoints, settings.config.poll.concurrency
        )


class Monitor:
    """The daemon's memory: one state per endpoint, advanced by each poll cycle.

    State changes happen on the event loop only, endpoint by endpoint as answers arrive,
    so a scrape in between sees each endpoint either before or after its poll, never half.
    """

    def __init__(
        self,
        config: MonitorConfig,
        metrics: MonitorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._states: dict[EndpointRef, EndpointState] = {}
        self._watched = {endpoint.ref for endpoint in config.endpoints}
        self._cycles_completed = 0
        self._cycle_finished = asyncio.Condition()
        metrics.poll_interval.set(config.poll.interval_seconds)
        metrics.config_loaded(clock())
        metrics.watch(self.snapshot, self._states.get)
        metrics.prepare()

    @property
    def ready(self) -> bool:
        """True once a whole cycle has completed, so every endpoint has been tried."""
        return self._cycles_completed > 0

    @property
    def cycles_completed(self) -> int:
        return self._cycles_completed

    def snapshot(self) -> Snapshot:
        return [(endpoint, self._states.get(endpoint.ref)) for endpoint in self.config.endpoints]

    def reconfigure(self, config: MonitorConfig) -> None:
        """Watch ``config`` from now on. Endpoints still configured keep their state (and
        their open alerts); those that left resolve their alerts and lose their series."""
        kept = {endpoint.ref for endpoint in config.endpoints}
        for endpoint in self.config.endpoints:
            if endpoint.ref in kept:
                continue
            state = self._states.pop(endpoint.ref, None)
            log.info("endpoint_removed", **endpoint_identity(endpoint))
            for event in forget(state) if state is not None else []:
                emit_alert(endpoint, event)
        for endpoint in config.endpoints:
            if endpoint.ref not in self._watched:
                log.info("endpoint_added_to_config", **endpoint_identity(endpoint))
        self.config = config
        self._watched = kept
        self.metrics.poll_interval.set(config.poll.interval_seconds)
        self.metrics.prepare()

    def state_of(self, endpoint: EndpointConfig) -> EndpointState | None:
        return self._states.get(endpoint.ref)

    async def wait_for_cycles(self, count: int) -> None:
        """Until ``count`` cycles have completed in total; callers bound it with a timeout."""
        async with self._cycle_finished:
            await self._cycle_finished.wait_for(lambda: self._cycles_completed >= count)

    async def run_cycle(self, client: AtlasClient) -> None:
        """Poll every endpoint once, advancing each one's state as soon as it is known."""
        started = time.perf_counter()
        await for_each_bounded(
            self.config.endpoints,
            self.config.poll.concurrency,
            lambda endpoint: self._check(client, endpoint),
        )
        duration = time.perf_counter() - started
        self.metrics.cycle_finished(duration, at=self._clock())
        self._log_cycle(duration)
        async with self._cycle_finished:
            self._cycles_completed += 1
            self._cycle_finished.notify_all()

    async def _check(self, client: AtlasClient, endpoint: EndpointConfig) -> None:
        try:
            result = await poll_endpoint(client, endpoint)
            if endpoint.ref not in self._watched:
                return  # removed by a reload while its poll was in flight
            previous = self._states.get(endpoint.ref, EndpointState())
            state, observation = await add_if_missing(
                client,
                endpoint,
                AddPolicy.for_endpoint(self.config, endpoint),
                previous,
                result.observation(),
                self.metrics,
            )
            transition = advance(state, observation, self._clock(), self.config.alerts)
            self._states[endpoint.ref] = transition.state
            self.metrics.endpoint_changed(endpoint.ref)
            _log_endpoint_change(endpoint, previous, transition.state)
            for event in transition.events:
                emit_alert(endpoint, event)
                if event.firing:
                    self.metrics.alerts.labels(event.alert.value).inc()
        except Exception:
            # A bug must cost one endpoint one cycle, never the others or the daemon.
            log.exception("endpoint_check_failed", **endpoint_identity(endpoint))

    def _log_cycle(self, duration: float) -> None:
        states = [state for _, state in self.snapshot() if state is not None]
        summary = {
            "duration_seconds": round(duration, 3),
            "endpoints": len(self.config.endpoints),
            "up": sum(state.up for state in states),
            "firing_alerts": sum(len(state.firing) for state in states),
        }
        interval = self.config.poll.interval_seconds
        if duration > interval:
            log.warning("poll_cycle_overran", **summary, interval_seconds=interval)
        else:
            log.info("poll_cycle_finished", **summary)


class PollScheduler:
    """Runs ``Monitor.run_cycle`` on APScheduler's interval trigger.

    The first cycle starts at once; a cycle that outlasts the interval is never stacked
    (``max_instances=1``) and missed runs collapse into one (``coalesce``). Skipped runs
    are logged and counted, so an interval that is too short shows up on a dashboard.
    """

    JOB_ID = "poll-cycle"

    def __init__(self, monitor: Monitor, client: AtlasClient) -> None:
        self._monitor = monitor
        self._client = client
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running_cycle: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.add_job(
            self._cycle,
            IntervalTrigger(seconds=self._monitor.config.poll.interval_seconds, timezone=UTC),
            id=self.JOB_ID,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling, cancel the cycle in flight and wait for it to unwind."""
        # APScheduler shuts down on a later loop iteration; no cycle may start meanwhile.
        self._stopping = True
        # A cycle job APScheduler has just created but not yet started would be cancelled
        # by its shutdown before reaching our code, and logged as a failed job: let it start
        # and see _stopping first.
        await asyncio.sleep(0)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        cycle = self._running_cycle
        if cycle is not None and not cycle.done():
            cycle.cancel()
            _, still_running = await asyncio.wait({cycle}, timeout=STOP_TIMEOUT_SECONDS)
            if still_running:
                log.error("poll_cycle_did_not_stop", timeout_seconds=STOP_TIMEOUT_SECONDS)

    async def _cycle(self) -> None:
        if self._stopping:
            return
        self._running_cycle = asyncio.current_task()
        try:
            await self._monitor.run_cycle(self._client)
        except asyncio.CancelledError:
            # Only stop() cancels a cycle. Ending quietly keeps APScheduler from reporting
            # a shutdown as a failed job, with a traceback, in the operator's log.
            log.info("poll_cycle_cancelled", reason="shutting down")
        except Exception:
            log.exception("poll_cycle_failed")
        finally:
            self._running_cycle = None

    def _on_skipped(self, event: JobEvent) -> None:
        self._monitor.metrics.poll_cycles_skipped.inc()
        log.warning(
            "poll_cycle_skipped",
            reason="previous cycle still running",
            interval_seconds=self._monitor.config.poll.interval_seconds,
        )


def _log_endpoint_change(
    endpoint: EndpointConfig, previous: EndpointState, state: EndpointState
) -> None:
    """Changes only: a healthy endpoint polled again says nothing above debug."""
    identity = endpoint_identity(endpoint)
    if state.raw_status != previous.raw_status and state.raw_status is not None:
        log.info(
            "endpoint_status_changed",
            **identity,
            connection_status=state.raw_status,
            previous_status=previous.raw_status,
        )
        if state.status is ConnectionStatus.UNKNOWN:
            log.warning("unknown_connection_status", **identity, raw_status=state.raw_status)
    if state.consecutive_failures == 1:
        log.warning("endpoint_poll_failed", **identity, cause=state.last_failure)
    elif state.consecutive_failures > 1:
        log.debug(
            "endpoint_poll_failed",
            **identity,
            cause=state.last_failure,
            consecutive_failures=state.consecutive_failures,
        )
    elif previous.consecutive_failures and state.up:
        log.info(
            "endpoint_poll_recovered",
            **identity,
            failed_polls=previous.consecutive_failures,
        )
    if state.missing and not previous.missing:
        log.warning("endpoint_not_found", **identity)
