"""Prometheus metrics: endpoint gauges built from a state snapshot at scrape time, plus the
monitor's own counters and histograms, all in one private registry per daemon.

A scrape never calls Atlas and never waits for a poll: it reads whatever the last polls
left in the state table, which is what Prometheus' exporter guidelines ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.alerts import AlertName
from monitor.atlas import ConnectionStatus
from monitor.config import EndpointConfig
from monitor.state import EndpointState

ENDPOINT_LABELS = ("group_id", "private_link_id", "interface_endpoint_id")
ADD_RESULTS = ("added", "dry_run", "failed")

Snapshot = Sequence[tuple[EndpointConfig, EndpointState | None]]
"""Every configured endpoint with its state, or None before its first poll."""


class EndpointCollector(Collector):
    """Yields the ``atlas_interface_endpoint_*`` families from ``snapshot()``.

    Series exist only for endpoints in the snapshot, so an endpoint that leaves the config
    leaves /metrics with it; status series appear with the first answer from Atlas.
    """

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not read a state table that may not exist yet.
        yield from self._families(user_labels=())

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        user_labels = sorted({label for endpoint, _ in snapshot for label in endpoint.labels})
        families = self._families(user_labels)
        status, up, error, delete_requested, since, last_success, info, firing, configured = (
            families
        )
        configured.add_metric([], len(snapshot))
        for endpoint, state in snapshot:
            ids = [endpoint.group_id, endpoint.private_link_id, endpoint.interface_endpoint_id]
            info.add_metric(
                [*ids, endpoint.display_name, *(endpoint.labels.get(k, "") for k in user_labels)],
                1,
            )
            up.add_metric(ids, 1 if state is not None and state.up else 0)
            for alert in AlertName:
                firing.add_metric([*ids, alert.value], 1 if state and alert in state.firing else 0)
            if state is None:
                continue
            if state.last_success is not None:
                last_success.add_metric(ids, state.last_success)
            if state.status is None:
                continue
            for candidate in ConnectionStatus:
                status.add_metric([*ids, candidate.value], 1 if candidate is state.status else 0)
            error.add_metric(ids, 1 if state.error_message is not None else 0)
            delete_requested.add_metric(ids, 1 if state.delete_requested else 0)
            if state.status_since is not None:
                since.add_metric(ids, state.status_since)
        yield from families

    @staticmethod
    def _families(user_labels: Sequence[str]) -> list[GaugeMetricFamily]:
        def gauge(name: str, documentation: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=[*ENDPOINT_LABELS, *extra])

        return [
            gauge(
                "atlas_interface_endpoint_status",
                "Connection status as a state set: 1 for the current status, 0 for the others.",
                ["status"],
            ),
            gauge("atlas_interface_endpoint_up", "1 if the last poll got a valid answer."),
            gauge("atlas_interface_endpoint_error", "1 if Atlas reports an errorMessage."),
            gauge("atlas_interface_endpoint_delete_requested", "Atlas' deleteRequested as 0/1."),
            gauge(
                "atlas_interface_endpoint_status_since_timestamp_seconds",
                "Unix time the current status was first seen.",
            ),
            gauge(
                "atlas_interface_endpoint_last_success_timestamp_seconds",
                "Unix time of the last valid answer.",
            ),
            gauge(
                "atlas_interface_endpoint_info",
                "Names and user labels of each configured endpoint; always 1.",
                ["name", *user_labels],
            ),
            gauge(
                "atlas_interface_endpoint_alert_firing",
                "1 while the monitor's alert of this name is firing for the endpoint, else 0.",
                ["alert"],
            ),
            GaugeMetricFamily(
                "atlas_monitor_endpoints_configured", "Endpoints in the configuration."
            ),
        ]


class MonitorMetrics:
    """The registry of one daemon and the self-metrics its parts update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.api_requests = Counter(
            "atlas_monitor_api_requests",
            "HTTP exchanges with Atlas, Digest challenges included; code 'error' = no response.",
            ["method", "code"],
            registry=self.registry,
        )
        self.api_request_duration = Histogram(
            "atlas_monitor_api_request_duration_seconds",
            "Time until Atlas' response headers arrived, per exchange.",
            ["method"],
            registry=self.registry,
        )
        self.poll_cycle_duration = Histogram(
            "atlas_monitor_poll_cycle_duration_seconds",
            "Wall time of one whole poll cycle.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.poll_interval = Gauge(
            "atlas_monitor_poll_interval_seconds",
            "Configured poll.interval_seconds; staleness rules compare against it.",
            registry=self.registry,
        )
        self.config_reload_successful = Gauge(
            "atlas_monitor_config_last_reload_successful",
            "1 if the last config load (start, SIGHUP or POST /-/reload) succeeded, else 0.",
            registry=self.registry,
        )
        self.config_reload_success_time = Gauge(
            "atlas_monitor_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load.",
            registry=self.registry,
        )
        self._last_cycle_finished: float | None = None
        self.registry.register(
            _OptionalGauge(
                "atlas_monitor_last_poll_cycle_timestamp_seconds",
                "Unix time the last poll cycle finished; absent until the first one has.",
                lambda: self._last_cycle_finished,
            )
        )
        self.poll_cycles_skipped = Counter(
            "atlas_monitor_poll_cycles_skipped",
            "Scheduled cycles not started because the previous one was still running.",
            registry=self.registry,
        )
        self.alerts = Counter(
            "atlas_monitor_alerts",
            "Firing alert lines emitted.",
            ["alert"],
            registry=self.registry,
        )
        self.endpoints_added = Counter(
            "atlas_monitor_endpoints_added",
            "Add-on-missing outcomes.",
            ["result"],
            registry=self.registry,
        )
        build_info = Gauge(
            "atlas_monitor_build_info",
            "Version of the running monitor; always 1.",
            ["version"],
            registry=self.registry,
        )
        build_info.labels(__version__).set(1)
        # Known label values start at 0, so rate() and absent() work from the first scrape.
        for alert in AlertName:
            self.alerts.labels(alert.value)
        for result in ADD_RESULTS:
            self.endpoints_added.labels(result)

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        """The Atlas client's observer: every exchange on the wire lands here."""
        self.api_requests.labels(method, code).inc()
        self.api_request_duration.labels(method).observe(seconds)

    def config_loaded(self, at: float) -> None:
        self.config_reload_successful.set(1)
        self.config_reload_success_time.set(at)

    def config_rejected(self) -> None:
        self.config_reload_successful.set(0)

    def cycle_finished(self, duration: float, at: float) -> None:
        self.poll_cycle_duration.observe(duration)
        self._last_cycle_finished = at

    def watch(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry.register(EndpointCollector(snapshot))


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
