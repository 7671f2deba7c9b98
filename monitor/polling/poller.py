"""Polling many endpoints at once without letting one slow or broken endpoint hold up the
rest, and the scheduler that repeats it every ``poll.interval_seconds``."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import ValidationError

from monitor.atlas import (
    ApiVersion,
    AtlasClient,
    AtlasError,
    AtlasNotFoundError,
    EndpointRef,
    InterfaceEndpoint,
    LocalResourceError,
    RequestObserver,
    ServiceKey,
    describe_failure,
)
from monitor.config import (
    DiscoverSettings,
    EndpointConfig,
    MonitorConfig,
    Settings,
    endpoint_identity,
)
from monitor.exposition import MonitorMetrics, ServiceSnapshot, Snapshot
from monitor.polling.add_missing import add_if_missing
from monitor.polling.alerts import AlertEvent, emit_alert, emit_service_alert
from monitor.polling.state import (
    AddPolicy,
    EndpointState,
    Observation,
    ServiceObservation,
    ServiceState,
    advance,
    advance_service,
    forget,
    forget_service,
)
from monitor.polling.statestore import PendingWrites, SavedState, StateStore
from monitor.providers import PROVIDERS, CloudProvider, ConnectionStatus, ServiceStatus

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
        local = isinstance(self.error, LocalResourceError)
        return Observation.failed(describe_failure(self.error), local=local)


async def for_each_by_project(
    items: Iterable[Item],
    project_of: Callable[[Item], str],
    concurrency: int,
    work: Callable[[Item], Awaitable[None]],
) -> None:
    """Run ``work`` on every item, each project's items in a lane of their own.

    Atlas paces and throttles per project, and the client waits out a project's pace slot,
    pause or back-off before it takes one of its ``poll.concurrency`` request slots. Were all
    items one queue in config order, a project with more items than workers would keep every
    worker waiting on its slots while the other projects sat idle: a cycle would take as long
    as the projects' paced times added up. Here each project has workers of its own, its share
    of ``concurrency`` by item count and at least one, so every project moves at its own pace
    and one slow or throttled project never holds another's workers; a worker whose lane is
    done helps the lane with the most items left per worker, so the cycle lasts as long as its
    slowest project. The client's request slots bound what is in flight; the workers number
    ``concurrency`` plus at most one per small project, so a fleet of thousands never becomes
    thousands of coroutines, and every task is owned by the TaskGroup (none is orphaned).
    """
    lanes: dict[str, deque[Item]] = {}
    for item in items:
        lanes.setdefault(project_of(item), deque()).append(item)
    total = sum(map(len, lanes.values()))
    workers_on: Counter[str] = Counter()

    def lane_to_help() -> str | None:
        busy = [project for project, lane in lanes.items() if lane]
        return max(
            busy, key=lambda project: len(lanes[project]) / (workers_on[project] + 1), default=None
        )

    async def lane_worker(project: str | None) -> None:
        while project is not None:
            workers_on[project] += 1
            while lanes[project]:
                await work(lanes[project].popleft())
            workers_on[project] -= 1
            project = lane_to_help()

    async with asyncio.TaskGroup() as workers:
        for project, lane in lanes.items():
            for _ in range(min(len(lane), max(1, concurrency * len(lane) // total))):
                workers.create_task(lane_worker(project))


async def poll_endpoints(
    client: AtlasClient, endpoints: Sequence[EndpointConfig], concurrency: int
) -> list[PollResult]:
    """Poll every endpoint once; results come back in the order of ``endpoints``."""
    results: dict[int, PollResult] = {}

    async def poll(indexed: tuple[int, EndpointConfig]) -> None:
        index, endpoint = indexed
        results[index] = await poll_endpoint(client, endpoint)

    await for_each_by_project(enumerate(endpoints), lambda job: job[1].group_id, concurrency, poll)
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
        login=settings.credentials.login,
        api_version=atlas.api_version,
        timeout_seconds=atlas.timeout_seconds,
        max_retries=atlas.max_retries,
        max_connections=settings.config.poll.concurrency,
        max_requests_per_minute=settings.config.poll.max_requests_per_minute,
        observer=observer,
    )


@dataclass(frozen=True)
class OncePass:
    """What ``once`` saw: a result per endpoint, and how many discovery listings failed
    (the endpoints those would have listed went unchecked, which is no all-clear)."""

    results: list[PollResult]
    failed_listings: int


async def poll_once(settings: Settings) -> OncePass:
    """One read-only pass over every configured (and discovered) endpoint, for ``once``."""
    config = settings.config
    async with build_client(settings) as client:
        found = await discover_endpoints(client, config.discover, config.poll.concurrency)
        endpoints = watched_endpoints(config.endpoints, found, config.poll.max_discovered_endpoints)
        results = await poll_endpoints(client, endpoints, config.poll.concurrency)
    return OncePass(results, sum(listing is None for listing in found.values()))


Discovered = dict[tuple[str, CloudProvider], list[EndpointConfig] | None]
"""Per (project, provider) of ``discover``: the endpoints found, or None if listing failed."""


async def discover_endpoints(
    client: AtlasClient, entries: Sequence[DiscoverSettings], concurrency: int
) -> Discovered:
    """List the endpoint services of every ``discover`` entry and provider."""
    found: Discovered = {}

    async def discover(job: tuple[DiscoverSettings, CloudProvider]) -> None:
        entry, provider = job
        try:
            services = await client.list_endpoint_services(entry.group_id, provider)
        except Exception as error:
            # Keep watching what was found before: a failed listing says nothing about them.
            # Any other exception is a bug, which must cost this listing, not the cycle.
            log.warning(
                "discovery_failed",
                group_id=entry.group_id,
                cloud_provider=provider.value,
                cause=describe_failure(error),
                exc_info=not isinstance(error, AtlasError),
            )
            found[(entry.group_id, provider)] = None
            return
        found[(entry.group_id, provider)] = [
            endpoint
            for service in services
            for endpoint_id in service.endpoint_ids
            if (endpoint := _discovered_endpoint(entry, provider, service.service_id, endpoint_id))
        ]

    jobs = [(entry, provider) for entry in entries for provider in entry.cloud_providers]
    await for_each_by_project(jobs, lambda job: job[0].group_id, concurrency, discover)
    return found


def _discovered_endpoint(
    entry: DiscoverSettings, provider: CloudProvider, service_id: str, endpoint_id: str
) -> EndpointConfig | None:
    try:
        return EndpointConfig(
            group_id=entry.group_id,
            private_link_id=service_id,
            cloud_provider=provider,
            interface_endpoint_id=endpoint_id,
            name=PROVIDERS[provider].display_name(endpoint_id),
            labels=entry.labels,
        )
    except ValidationError as error:
        log.warning(
            "discovered_endpoint_skipped",
            group_id=entry.group_id,
            private_link_id=service_id,
            interface_endpoint_id=endpoint_id,
            cause="; ".join(detail["msg"] for detail in error.errors(include_url=False)),
        )
        return None


def watched_endpoints(
    configured: Sequence[EndpointConfig], discovered: Discovered, max_discovered: int
) -> list[EndpointConfig]:
    """The config's endpoints, then those discovered that the config does not name (its
    name, labels and add_if_missing win), at most ``max_discovered`` of them: the first in
    the order of project and provider, so the same ones stay watched listing after listing."""
    seen = {endpoint.ref.key for endpoint in configured}
    watched = list(configured)
    dropped = 0
    for listing in sorted(discovered):
        for endpoint in discovered[listing] or ():
            key = endpoint.ref.key
            if key in seen:
                continue
            seen.add(key)
            if len(watched) - len(configured) < max_discovered:
                watched.append(endpoint)
            else:
                dropped += 1
    if dropped:
        log.warning(
            "discovered_endpoints_dropped",
            dropped=dropped,
            watched=max_discovered,
            reason="more than poll.max_discovered_endpoints",
        )
    return watched


class Monitor:
    """The daemon's memory: one state per endpoint, advanced by each poll cycle.

    State changes happen on the event loop only, endpoint by endpoint as answers arrive,
    so a scrape in between sees each endpoint either before or after its poll, never half.

    With a ``store`` the memory survives restarts: it starts from the saved states, and
    what changed is written once per cycle, except what must be durable as it happens (an
    alert line, a change of status, a POST or DELETE about to be sent; see ``save``).
    """

    def __init__(
        self,
        config: MonitorConfig,
        metrics: MonitorMetrics,
        clock: Callable[[], float] = time.time,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._store = store
        saved = store.saved if store is not None else SavedState()
        self._unclaimed = dict(saved.endpoints)
        """Saved states not matched to a watched endpoint yet: discovery may still find them."""
        self._unclaimed_services = dict(saved.services)
        self._unsaved = PendingWrites()
        self._saving = asyncio.Lock()
        metrics.state_store_up = None if store is None else store.up
        self._states: dict[EndpointRef, EndpointState] = {}
        self._endpoints: list[EndpointConfig] = []
        self._watched: dict[EndpointRef, EndpointConfig] = {}
        self._discovered: Discovered = {}
        self._services: dict[ServiceKey, ServiceState] = {}
        self._service_keys: list[ServiceKey] = []
        self._cycles_to_discovery = 0
        """Cycles left before the next discovery; 0 = discover at the start of the next one."""
        self._cycles_completed = 0
        self._cycle_finished = asyncio.Condition()
        metrics.poll_interval.set(config.poll.interval_seconds)
        metrics.config_loaded(clock())
        metrics.watch(self.snapshot, self._states.get, self.service_snapshot)
        self._endpoints = list(config.endpoints)
        self._watched = {endpoint.ref: endpoint for endpoint in self._endpoints}
        self._claim_saved(self._endpoints)
        self._watch_services()
        self._release_unclaimed("left the config while the monitor was stopped")
        metrics.prepare()

    @property
    def ready(self) -> bool:
        """True once a whole cycle has completed, so every endpoint has been tried."""
        return self._cycles_completed > 0

    @property
    def cycles_completed(self) -> int:
        return self._cycles_completed

    @property
    def endpoints(self) -> list[EndpointConfig]:
        """What is watched: the config's endpoints and those discovery found."""
        return self._endpoints

    def snapshot(self) -> Snapshot:
        return [(endpoint, self._states.get(endpoint.ref)) for endpoint in self._endpoints]

    def service_snapshot(self) -> ServiceSnapshot:
        return [(key, self._services.get(key)) for key in self._service_keys]

    def reconfigure(self, config: MonitorConfig) -> None:
        """Watch ``config`` from now on. Endpoints still watched keep their state (and
        their open alerts); those that left resolve their alerts and lose their series."""
        wanted = {
            (entry.group_id, provider)
            for entry in config.discover
            for provider in entry.cloud_providers
        }
        if wanted != self._discovered.keys():
            self._cycles_to_discovery = 0  # new projects or providers: look at the next cycle
        self._discovered = {key: found for key, found in self._discovered.items() if key in wanted}
        self.config = config
        self.metrics.poll_interval.set(config.poll.interval_seconds)
        self._watch(
            watched_endpoints(
                config.endpoints, self._discovered, config.poll.max_discovered_endpoints
            ),
            removed_because="removed from the config",
        )
        self._release_unclaimed("left the config while the monitor was stopped")

    def _watch(self, endpoints: list[EndpointConfig], removed_because: str) -> None:
        """Make ``endpoints`` the watched ones: log who came and went, resolve the alerts of
        those gone (nobody may wait for an alert that can no longer end), drop their series."""
        kept = {endpoint.ref: endpoint for endpoint in endpoints}
        configured = {endpoint.ref for endpoint in self.config.endpoints}
        for endpoint in self._endpoints:
            if endpoint.ref in kept:
                continue
            state = self._states.pop(endpoint.ref, None)
            self._unsaved.endpoint_dropped(endpoint.ref)
            log.info("endpoint_removed", **endpoint_identity(endpoint), reason=removed_because)
            for event in forget(state) if state is not None else []:
                emit_alert(endpoint, event)
        for endpoint in endpoints:
            if endpoint.ref not in self._watched:
                what = (
                    "endpoint_added_to_config"
                    if endpoint.ref in configured
                    else "endpoint_discovered"
                )
                log.info(
                    what,
                    **endpoint_identity(endpoint),
                    cloud_provider=endpoint.cloud_provider.value,
                )
        self._endpoints = endpoints
        self._watched = kept
        self._claim_saved(endpoints)
        self._watch_services()
        self.metrics.prepare()

    def _claim_saved(self, endpoints: list[EndpointConfig]) -> None:
        """Newly watched endpoints continue from their saved state, if they have one."""
        for endpoint in endpoints:
            saved = self._unclaimed.pop(endpoint.ref, None)
            if saved is not None and endpoint.ref not in self._states:
                self._states[endpoint.ref] = saved.state

    def _release_unclaimed(self, reason: str) -> None:
        """Saved endpoints (and services) that no discovery may still claim are gone: drop
        them from the store, resolving their alerts as a reload that removed them would."""
        awaiting = {
            (entry.group_id, provider)
            for entry in self.config.discover
            for provider in entry.cloud_providers
            if self._discovered.get((entry.group_id, provider)) is None
        }
        for ref, saved in list(self._unclaimed.items()):
            if (ref.group_id, ref.cloud_provider) not in awaiting:
                del self._unclaimed[ref]
                self._unsaved.endpoint_dropped(ref)
                log.info("endpoint_removed", **endpoint_identity(saved.endpoint), reason=reason)
                for event in forget(saved.state):
                    emit_alert(saved.endpoint, event)
        for key, state in list(self._unclaimed_services.items()):
            if (key.group_id, key.cloud_provider) not in awaiting:
                del self._unclaimed_services[key]
                self._unsaved.service_dropped(key)
                for event in forget_service(state):
                    emit_service_alert(key, event)

    def _watch_services(self) -> None:
        """v2 watches the endpoint service of every watched endpoint, once each."""
        keys: list[ServiceKey] = []
        if self.config.atlas.api_version is ApiVersion.V2:
            keys = sorted(
                {
                    ServiceKey(endpoint.group_id, endpoint.cloud_provider, endpoint.private_link_id)
                    for endpoint in self._endpoints
                }
            )
        for key in set(self._services) - set(keys):
            self._unsaved.service_dropped(key)
            for event in forget_service(self._services.pop(key)):
                emit_service_alert(key, event)
        for key in keys:
            saved = self._unclaimed_services.pop(key, None)
            if saved is not None and key not in self._services:
                self._services[key] = saved
        self._service_keys = keys

    def state_of(self, endpoint: EndpointConfig) -> EndpointState | None:
        return self._states.get(endpoint.ref)

    async def wait_for_cycles(self, count: int) -> None:
        """Until ``count`` cycles have completed in total; callers bound it with a timeout."""
        async with self._cycle_finished:
            await self._cycle_finished.wait_for(lambda: self._cycles_completed >= count)

    async def run_cycle(self, client: AtlasClient) -> None:
        """Poll every endpoint once, advancing each one's state as soon as it is known."""
        started = time.perf_counter()
        concurrency = self.config.poll.concurrency
        if self.config.discover and self._cycles_to_discovery == 0:
            self._cycles_to_discovery = self.config.poll.discover_every_cycles
            await self._discover(client)
        self._cycles_to_discovery = max(0, self._cycles_to_discovery - 1)
        # Services and endpoints share each project's lane, its services first: a project
        # whose service check waits out a throttle must not hold back another's endpoints.
        checks: list[ServiceKey | EndpointConfig] = [*self._service_keys, *self._endpoints]
        await for_each_by_project(
            checks,
            lambda check: check.group_id,
            concurrency,
            lambda check: (
                self._check_service(client, check)
                if isinstance(check, ServiceKey)
                else self._check(client, check)
            ),
        )
        await self.save()
        duration = time.perf_counter() - started
        self.metrics.cycle_finished(duration, at=self._clock())
        self._log_cycle(duration)
        async with self._cycle_finished:
            self._cycles_completed += 1
            self._cycle_finished.notify_all()

    async def _discover(self, client: AtlasClient) -> None:
        found = await discover_endpoints(client, self.config.discover, self.config.poll.concurrency)
        for key, endpoints in found.items():
            if endpoints is not None or key not in self._discovered:
                self._discovered[key] = endpoints
        self._watch(
            watched_endpoints(
                self.config.endpoints,
                self._discovered,
                self.config.poll.max_discovered_endpoints,
            ),
            removed_because="no longer listed by its endpoint service",
        )
        self._release_unclaimed("no longer listed by its endpoint service")

    async def _check_service(self, client: AtlasClient, key: ServiceKey) -> None:
        try:
            try:
                answer = await client.get_endpoint_service(
                    key.group_id, key.cloud_provider, key.service_id
                )
                observation = ServiceObservation(answer=answer)
            except AtlasNotFoundError:
                observation = ServiceObservation(missing=True)
            except AtlasError as error:
                self.metrics.count_local_error(error)
                observation = ServiceObservation(failure=error.summary)
            if key not in self._service_keys:
                return  # no longer watched since the request went out
            previous = self._services.get(key, ServiceState())
            transition = advance_service(previous, observation, self._clock(), self.config.alerts)
            self._services[key] = transition.state
            self._unsaved.service_changed(key)
            _log_service_change(key, previous, transition.state)
            await self._announce(
                transition.events,
                functools.partial(emit_service_alert, key),
                _status_changed(previous.raw_status, transition.state.raw_status),
            )
        except Exception:
            log.exception("endpoint_service_check_failed", **_service_identity(key))

    async def _check(self, client: AtlasClient, endpoint: EndpointConfig) -> None:
        try:
            result = await poll_endpoint(client, endpoint)
            self.metrics.count_local_error(result.error)
            if endpoint.ref not in self._watched:
                return  # removed by a reload while its poll was in flight
            previous = self._states.get(endpoint.ref, EndpointState())

            async def record(state: EndpointState) -> None:
                """Make a POST or DELETE count before it is sent: a crash right after
                must not let the next process make it again beyond max_attempts."""
                if endpoint.ref in self._watched:
                    self._states[endpoint.ref] = state
                    self._unsaved.endpoint_changed(endpoint.ref)
                    await self.save()

            state, observation = await add_if_missing(
                client,
                endpoint,
                AddPolicy.for_endpoint(self.config, endpoint),
                previous,
                result.observation(),
                self.metrics,
                before_request=record,
            )
            transition = advance(state, observation, self._clock(), self.config.alerts)
            self._states[endpoint.ref] = transition.state
            self._unsaved.endpoint_changed(endpoint.ref)
            self.metrics.endpoint_changed(endpoint.ref)
            _log_endpoint_change(endpoint, previous, transition.state)
            await self._announce(
                transition.events,
                functools.partial(emit_alert, endpoint),
                _status_changed(previous.raw_status, transition.state.raw_status),
            )
        except Exception:
            # A bug must cost one endpoint one cycle, never the others or the daemon.
            log.exception("endpoint_check_failed", **endpoint_identity(endpoint))

    async def _announce(
        self, events: list[AlertEvent], emit: Callable[[AlertEvent], None], status_changed: bool
    ) -> None:
        """Write the alert lines of an endpoint's or a service's transition, count the firing
        ones, and save at once when they (or a new status) must survive a crash."""
        for event in events:
            emit(event)
            if event.firing:
                self.metrics.alerts.labels(event.alert.value).inc()
        if events or status_changed:
            await self.save()

    async def save(self) -> None:
        """Write every state changed since the last save, in one transaction, off the loop.

        Called once per cycle, at its end, and at once after an alert line or a change of
        status (so a restart neither repeats the line nor moves ``status_since``) and before
        an add-on-missing request (so ``max_attempts`` holds across processes). Lines are
        written before they are saved: a crash in between repeats a line rather than losing
        one. Saves queue behind each other, and each takes all that changed meanwhile.
        A save cancelled mid-way (shutdown) still finishes, and the final one waits for it.
        """
        if self._store is not None and self._store.usable:
            await asyncio.shield(asyncio.ensure_future(self._save_unsaved(self._store)))

    async def _save_unsaved(self, store: StateStore) -> None:
        async with self._saving:
            batch = self._unsaved.take(self._watched, self._states, self._services)
            if batch and not await store.save(batch):
                self._unsaved.put_back(batch)
            self.metrics.state_store_up = store.up

    def _log_cycle(self, duration: float) -> None:
        states = [state for _, state in self.snapshot() if state is not None]
        summary = {
            "duration_seconds": round(duration, 3),
            "endpoints": len(self._endpoints),
            "up": sum(state.up for state in states),
            "firing_alerts": sum(len(state.firing) for state in states)
            + sum(len(state.firing) for state in self._services.values()),
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


def _status_changed(previous: str | None, current: str | None) -> bool:
    """A change of a known status, which must reach the state file at once (it moves
    ``status_since``); a first sighting waits for the end of the cycle, so a fresh start
    over thousands of endpoints is not a transaction per endpoint."""
    return previous is not None and current != previous


def _service_identity(key: ServiceKey) -> dict[str, str]:
    return {
        "group_id": key.group_id,
        "private_link_id": key.service_id,
        "cloud_provider": key.cloud_provider.value,
    }


def _log_service_change(key: ServiceKey, previous: ServiceState, state: ServiceState) -> None:
    identity = _service_identity(key)
    if state.raw_status != previous.raw_status and state.raw_status is not None:
        log.info(
            "endpoint_service_status_changed",
            **identity,
            status=state.raw_status,
            previous_status=previous.raw_status,
        )
        if state.status is ServiceStatus.UNKNOWN:
            log.warning("unknown_endpoint_service_status", **identity, raw_status=state.raw_status)
    if state.missing and not previous.missing:
        log.warning("endpoint_service_not_found", **identity)
    if not state.up and not state.missing and state.last_failure != previous.last_failure:
        log.warning("endpoint_service_poll_failed", **identity, cause=state.last_failure)


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
