"""The registry of one daemon: its own counters, gauges and histograms, and what /metrics
serves, the endpoint and service families included."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.atlas import LOCAL_RESOURCE_ERRNOS, EndpointRef, LocalResourceError
from monitor.exposition.cache import OPENMETRICS_EOF, Exposition, Piece, compress
from monitor.exposition.endpoints import EndpointCollector, EndpointExposition, Snapshot
from monitor.exposition.services import ServiceCollector, ServiceSnapshot
from monitor.log_output import write_errors
from monitor.polling.alerts import AlertName
from monitor.polling.state import EndpointState

ADD_RESULTS = ("added", "dry_run", "failed")
COMPRESS_EVERY = 0.25
"""Seconds between two rounds of background compression (MonitorMetrics.keep_compressed):
a block polls left at least this long ago is compressed before any scrape asks for it."""
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)
_EOF = Piece((OPENMETRICS_EOF,))


class MonitorMetrics:
    """The registry of one daemon and the self-metrics its parts update.

    ``registry`` holds everything (for ``get_sample_value`` and any prometheus_client
    tooling); ``render`` is what /metrics serves: the self-metrics through prometheus_client,
    the endpoint families through the incremental ``EndpointExposition``, which the state
    table's owner keeps informed (``endpoint_changed``, ``prepare``).
    """

    def __init__(self) -> None:
        self._own = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry()
        self.registry.register(self._own)
        self._snapshot: Callable[[], Snapshot] = list
        self._state_of: Callable[[EndpointRef], EndpointState | None] = lambda ref: None
        self._exposition = EndpointExposition()
        self._prepared = False
        self.api_requests = Counter(
            "atlas_monitor_api_requests",
            "HTTP exchanges with Atlas, Digest challenges included; code 'error' = no response.",
            ["method", "code"],
            registry=self._own,
        )
        self.api_request_duration = Histogram(
            "atlas_monitor_api_request_duration_seconds",
            "Time until Atlas' response headers arrived, per exchange.",
            ["method"],
            registry=self._own,
        )
        self.poll_cycle_duration = Histogram(
            "atlas_monitor_poll_cycle_duration_seconds",
            "Wall time of one whole poll cycle.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self._own,
        )
        self.poll_interval = Gauge(
            "atlas_monitor_poll_interval_seconds",
            "Configured poll.interval_seconds; staleness rules compare against it.",
            registry=self._own,
        )
        self.config_reload_successful = Gauge(
            "atlas_monitor_config_last_reload_successful",
            "1 if the last config load (start, SIGHUP or POST /-/reload) succeeded, else 0.",
            registry=self._own,
        )
        self.config_reload_success_time = Gauge(
            "atlas_monitor_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load.",
            registry=self._own,
        )
        self._last_cycle_finished: float | None = None
        self._own.register(
            _OptionalGauge(
                "atlas_monitor_last_poll_cycle_timestamp_seconds",
                "Unix time the last poll cycle finished; absent until the first one has.",
                lambda: self._last_cycle_finished,
            )
        )
        self.state_store_up: bool | None = None
        """Set by the owner of the state file; None = no ``state.path``, no sample."""
        self._own.register(
            _OptionalGauge(
                "atlas_monitor_state_store_up",
                "1 if the state file (state.path) is in use and its last write succeeded, "
                "0 if it is unavailable (state kept in memory only); absent without state.path.",
                lambda: None if self.state_store_up is None else float(self.state_store_up),
            )
        )
        self.poll_cycles_skipped = Counter(
            "atlas_monitor_poll_cycles_skipped",
            "Scheduled cycles not started because the previous one was still running.",
            registry=self._own,
        )
        self.alerts = Counter(
            "atlas_monitor_alerts",
            "Firing alerts decided, whether or not their line could be written to the log.",
            ["alert"],
            registry=self._own,
        )
        self._own.register(
            _ProcessCounter(
                "atlas_monitor_log_write_errors",
                "Log lines (alerts included) lost because the log output refused them.",
                write_errors,
            )
        )
        self.local_errors = Counter(
            "atlas_monitor_local_errors",
            "Requests to Atlas not sent because this host was out of a resource (cause: the "
            "errno, e.g. EMFILE); they never count towards the unreachable alert.",
            ["cause"],
            registry=self._own,
        )
        self.endpoints_added = Counter(
            "atlas_monitor_endpoints_added",
            "Add-on-missing outcomes.",
            ["result"],
            registry=self._own,
        )
        build_info = Gauge(
            "atlas_monitor_build_info",
            "Version of the running monitor; always 1.",
            ["version"],
            registry=self._own,
        )
        build_info.labels(__version__).set(1)
        # Known label values start at 0, so rate() and absent() work from the first scrape.
        for alert in AlertName:
            self.alerts.labels(alert.value)
        for result in ADD_RESULTS:
            self.endpoints_added.labels(result)
        for number in LOCAL_RESOURCE_ERRNOS:
            self.local_errors.labels(errno.errorcode[number])

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        """The Atlas client's observer: every exchange on the wire lands here."""
        self.api_requests.labels(method, code).inc()
        self.api_request_duration.labels(method).observe(seconds)

    def count_local_error(self, error: BaseException | None) -> None:
        """Count ``error`` if it is a local resource shortage (see LocalResourceError)."""
        if isinstance(error, LocalResourceError):
            self.local_errors.labels(error.cause).inc()

    def config_loaded(self, at: float) -> None:
        self.config_reload_successful.set(1)
        self.config_reload_success_time.set(at)

    def config_rejected(self) -> None:
        self.config_reload_successful.set(0)

    def cycle_finished(self, duration: float, at: float) -> None:
        self.poll_cycle_duration.observe(duration)
        self._last_cycle_finished = at

    def watch(
        self,
        snapshot: Callable[[], Snapshot],
        state_of: Callable[[EndpointRef], EndpointState | None],
        services: Callable[[], ServiceSnapshot] = list,
    ) -> None:
        """Serve the endpoints of ``snapshot``, whose current state ``state_of`` tells, and
        the endpoint services of ``services``."""
        self.registry.register(EndpointCollector(snapshot))
        self._own.register(ServiceCollector(services))
        self._snapshot = snapshot
        self._state_of = state_of
        self._prepared = False

    def prepare(self) -> None:
        """Bring the exposition up to date with the whole snapshot, now rather than in the
        next scrape: after a change of config (new templates: a quarter of a second at
        10,000 endpoints), or of anything ``endpoint_changed`` does not report."""
        self._exposition.sync(self._snapshot())
        self._prepared = True

    def endpoint_changed(self, ref: EndpointRef) -> None:
        """The state of ``ref`` was replaced: its lines are re-rendered now (a few
        microseconds per poll, where a scrape would pay for every endpoint polled since the
        last one); only endpoints named here (or all, after ``prepare``) are re-rendered."""
        if self._prepared:
            self._exposition.changed(ref, self._state_of(ref))

    def render(self, *, openmetrics: bool = False) -> Exposition:
        """The whole exposition, in the Prometheus text format or OpenMetrics."""
        if not self._prepared:
            self.prepare()
        self._exposition.update()
        endpoints = self._exposition.pieces()
        if not openmetrics:
            return Exposition((Piece((generate_latest(self._own),)), *endpoints))
        own = _openmetrics_latest(self._own).removesuffix(OPENMETRICS_EOF)
        return Exposition((Piece((own,)), *endpoints, _EOF))

    async def keep_compressed(self, every: float = COMPRESS_EVERY) -> None:
        """Until cancelled, every ``every`` seconds: compress the pieces of the blocks polls
        have left, in one worker thread call, so that a scrape, even one after a whole cycle,
        compresses only the blocks still being polled. The daemon's app runs this for as
        long as it serves.

        Pieces are immutable text, so a reload or a scrape meanwhile is harmless: a reload
        drops pieces this may still compress, and a scrape compressing the same piece at
        once gets the same bytes (see Piece).
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            pending = self.settled()
            if pending:
                await loop.run_in_executor(None, compress, pending)

    def settled(self) -> Sequence[Piece]:
        """The pieces a background compression may compress now (EndpointExposition.settle);
        called once per round, as it tells blocks changed since the previous call apart."""
        return self._exposition.settle() if self._prepared else ()


class _OptionalGauge(Collector):
    """A gauge with no sample while ``read()`` has nothing to say.

    A plain Gauge would export 0 until first set, which a staleness rule reads as 1970.
    """

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation)
        value = self._read()
        if value is not None:
            family.add_metric([], value)
        yield family


class _ProcessCounter(Collector):
    """A counter kept for the whole process rather than by one daemon's registry (the log
    output is the process'), read at each scrape."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())
