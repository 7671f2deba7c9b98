"""Prometheus metrics: endpoint gauges built from a state snapshot at scrape time, plus the
monitor's own counters and histograms, all in one private registry per daemon.

A scrape never calls Atlas and never waits for a poll: it reads whatever the last polls
left in the state table, which is what Prometheus' exporter guidelines ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.alerts import AlertName
from monitor.atlas import ConnectionStatus, EndpointRef
from monitor.config import EndpointConfig
from monitor.state import EndpointState

ENDPOINT_LABELS = ("group_id", "private_link_id", "interface_endpoint_id")
ADD_RESULTS = ("added", "dry_run", "failed")
OPENMETRICS_EOF = b"# EOF\n"

Snapshot = Sequence[tuple[EndpointConfig, EndpointState | None]]
"""Every configured endpoint with its state, or None before its first poll."""


@dataclass(frozen=True)
class _Family:
    name: str
    documentation: str
    extra_labels: tuple[str, ...] = ()
    with_user_labels: bool = False
    """The config's ``labels`` go on this family only (_info), as Prometheus advises."""


# One entry per per-endpoint family; endpoint_samples() fills them in this order.
ENDPOINT_FAMILIES = (
    _Family(
        "atlas_interface_endpoint_status",
        "Connection status as a state set: 1 for the current status, 0 for the others.",
        ("status",),
    ),
    _Family("atlas_interface_endpoint_up", "1 if the last poll got a valid answer."),
    _Family("atlas_interface_endpoint_error", "1 if Atlas reports an errorMessage."),
    _Family("atlas_interface_endpoint_delete_requested", "Atlas' deleteRequested as 0/1."),
    _Family(
        "atlas_interface_endpoint_status_since_timestamp_seconds",
        "Unix time the current status was first seen.",
    ),
    _Family(
        "atlas_interface_endpoint_last_success_timestamp_seconds",
        "Unix time of the last valid answer.",
    ),
    _Family(
        "atlas_interface_endpoint_info",
        "Names and user labels of each configured endpoint; always 1.",
        ("name",),
        with_user_labels=True,
    ),
    _Family(
        "atlas_interface_endpoint_alert_firing",
        "1 while the monitor's alert of this name is firing for the endpoint, else 0.",
        ("alert",),
    ),
)
_STATUS, _UP, _ERROR, _DELETE_REQUESTED, _SINCE, _LAST_SUCCESS, _INFO, _ALERT_FIRING = range(
    len(ENDPOINT_FAMILIES)
)
CONFIGURED = _Family("atlas_monitor_endpoints_configured", "Endpoints in the configuration.")

_go_float = cast(Callable[[float], str], floatToGoString)
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)
"""How prometheus_client writes sample values (untyped upstream)."""

Samples = list[list[tuple[list[str], float]]]
"""Per family of ENDPOINT_FAMILIES: the label values and the value of each sample."""


def user_labels_of(snapshot: Snapshot) -> tuple[str, ...]:
    """The union of the config's ``labels`` keys, which every info series carries."""
    return tuple(sorted({label for endpoint, _ in snapshot for label in endpoint.labels}))


def endpoint_samples(
    endpoint: EndpointConfig, state: EndpointState | None, user_labels: Sequence[str]
) -> Samples:
    """The samples of one endpoint: status series only once Atlas gave a status, every
    endpoint named on _info and its alerts listed, and nothing once it leaves the config."""
    ids = [endpoint.group_id, endpoint.private_link_id, endpoint.interface_endpoint_id]
    samples: Samples = [[] for _ in ENDPOINT_FAMILIES]
    names = [endpoint.display_name, *(endpoint.labels.get(key, "") for key in user_labels)]
    samples[_INFO].append(([*ids, *names], 1))
    samples[_UP].append((ids, 1 if state is not None and state.up else 0))
    for alert in AlertName:
        firing = state is not None and alert in state.firing
        samples[_ALERT_FIRING].append(([*ids, alert.value], 1 if firing else 0))
    if state is None:
        return samples
    if state.last_success is not None:
        samples[_LAST_SUCCESS].append((ids, state.last_success))
    if state.status is None:
        return samples
    for candidate in ConnectionStatus:
        samples[_STATUS].append(([*ids, candidate.value], 1 if candidate is state.status else 0))
    samples[_ERROR].append((ids, 1 if state.error_message is not None else 0))
    samples[_DELETE_REQUESTED].append((ids, 1 if state.delete_requested else 0))
    if state.status_since is not None:
        samples[_SINCE].append((ids, state.status_since))
    return samples


def _label_names(family: _Family, user_labels: Sequence[str]) -> list[str]:
    names = [*ENDPOINT_LABELS, *family.extra_labels]
    return [*names, *user_labels] if family.with_user_labels else names


class EndpointCollector(Collector):
    """Yields the ``atlas_interface_endpoint_*`` families from ``snapshot()``, for the
    registry API (``get_sample_value``, tests); /metrics renders them with
    ``EndpointExposition``, from the same ``endpoint_samples``.
    """

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not read a state table that may not exist yet.
        yield from self._families(user_labels=())

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        user_labels = user_labels_of(snapshot)
        *families, configured = self._families(user_labels)
        configured.add_metric([], len(snapshot))
        for endpoint, state in snapshot:
            for family, samples in zip(
                families, endpoint_samples(endpoint, state, user_labels), strict=True
            ):
                for labels, value in samples:
                    family.add_metric(labels, value)
        yield from families
        yield configured

    @staticmethod
    def _families(user_labels: Sequence[str]) -> list[GaugeMetricFamily]:
        return [
            *(
                GaugeMetricFamily(
                    family.name, family.documentation, labels=_label_names(family, user_labels)
                )
                for family in ENDPOINT_FAMILIES
            ),
            GaugeMetricFamily(CONFIGURED.name, CONFIGURED.documentation),
        ]


class EndpointExposition:
    """The endpoint families as exposition text, re-rendered only for the endpoints whose
    config or state changed since the last scrape.

    States are immutable and replaced on every poll, so "changed" is an identity check. At
    10,000 endpoints a full render through prometheus_client takes far longer than a scrape
    should; a scrape during a poll cycle re-renders only the endpoints polled since the last
    one. The text is the same in the Prometheus and the OpenMetrics format (gauges only).
    """

    def __init__(self) -> None:
        self._cache: dict[EndpointRef, _RenderedEndpoint] = {}

    def render(self, snapshot: Snapshot) -> bytes:
        user_labels = user_labels_of(snapshot)
        rendered: dict[EndpointRef, _RenderedEndpoint] = {}
        lines: list[list[bytes]] = [[] for _ in ENDPOINT_FAMILIES]
        for endpoint, state in snapshot:
            cached = self._cache.get(endpoint.ref)
            if cached is None or not cached.shows(endpoint, state, user_labels):
                cached = _RenderedEndpoint.of(endpoint, state, user_labels)
            rendered[endpoint.ref] = cached
            for family_lines, text in zip(lines, cached.texts, strict=True):
                family_lines.append(text)
        self._cache = rendered
        parts = []
        for family, family_lines in zip(ENDPOINT_FAMILIES, lines, strict=True):
            parts.append(_header(family))
            parts.extend(family_lines)
        parts.append(_header(CONFIGURED))
        parts.append(f"{CONFIGURED.name} {_go_float(len(snapshot))}\n".encode())
        return b"".join(parts)


@dataclass(frozen=True)
class _RenderedEndpoint:
    endpoint: EndpointConfig
    state: EndpointState | None
    user_labels: tuple[str, ...]
    texts: tuple[bytes, ...]
    """The endpoint's sample lines, one chunk per family of ENDPOINT_FAMILIES."""

    @classmethod
    def of(
        cls, endpoint: EndpointConfig, state: EndpointState | None, user_labels: tuple[str, ...]
    ) -> _RenderedEndpoint:
        texts = tuple(
            "".join(
                _sample_line(family.name, label_names, labels, value) for labels, value in samples
            ).encode()
            for family, label_names, samples in zip(
                ENDPOINT_FAMILIES,
                (_label_names(family, user_labels) for family in ENDPOINT_FAMILIES),
                endpoint_samples(endpoint, state, user_labels),
                strict=True,
            )
        )
        return cls(endpoint, state, user_labels, texts)

    def shows(
        self, endpoint: EndpointConfig, state: EndpointState | None, user_labels: tuple[str, ...]
    ) -> bool:
        return self.endpoint is endpoint and self.state is state and self.user_labels == user_labels


def _header(family: _Family) -> bytes:
    documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {documentation}\n# TYPE {family.name} gauge\n".encode()


def _sample_line(name: str, label_names: Sequence[str], labels: Sequence[str], value: float) -> str:
    pairs = ",".join(
        f'{label}="{_escape(text)}"' for label, text in zip(label_names, labels, strict=True)
    )
    return f"{name}{{{pairs}}} {_go_float(value)}\n"


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class MonitorMetrics:
    """The registry of one daemon and the self-metrics its parts update.

    ``registry`` holds everything (for ``get_sample_value`` and any prometheus_client
    tooling); ``render`` is what /metrics serves: the self-metrics through prometheus_client,
    the endpoint families through the incremental ``EndpointExposition``.
    """

    def __init__(self) -> None:
        self._own = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry()
        self.registry.register(self._own)
        self._snapshot: Callable[[], Snapshot] = list
        self._exposition = EndpointExposition()
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
        self.poll_cycles_skipped = Counter(
            "atlas_monitor_poll_cycles_skipped",
            "Scheduled cycles not started because the previous one was still running.",
            registry=self._own,
        )
        self.alerts = Counter(
            "atlas_monitor_alerts",
            "Firing alert lines emitted.",
            ["alert"],
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
        self._snapshot = snapshot

    def render(self, *, openmetrics: bool = False) -> bytes:
        """The whole exposition, in the Prometheus text format or OpenMetrics."""
        endpoints = self._exposition.render(self._snapshot())
        if not openmetrics:
            return generate_latest(self._own) + endpoints
        own = _openmetrics_latest(self._own)
        return own.removesuffix(OPENMETRICS_EOF) + endpoints + OPENMETRICS_EOF


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
