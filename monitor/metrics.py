"""Prometheus metrics: endpoint gauges built from a state snapshot at scrape time, plus the
monitor's own counters and histograms, all in one private registry per daemon.

A scrape never calls Atlas and never waits for a poll: it reads whatever the last polls
left in the state table, which is what Prometheus' exporter guidelines ask for.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.alerts import ENDPOINT_ALERTS, AlertName
from monitor.atlas import ENDPOINT_STATUSES, SERVICE_STATUSES, ConnectionStatus, EndpointRef
from monitor.config import EndpointConfig
from monitor.state import EndpointState, ServiceKey, ServiceState

ADD_RESULTS = ("added", "dry_run", "failed")
OPENMETRICS_EOF = b"# EOF\n"
# /metrics goes out in pieces of about this size, each compressed in turn.
CHUNK_BYTES = 256 * 1024

Snapshot = Sequence[tuple[EndpointConfig, EndpointState | None]]
"""Every watched endpoint with its state, or None before its first poll."""
ServiceSnapshot = Sequence[tuple[ServiceKey, ServiceState | None]]
"""Every watched endpoint service (v2) with its state, or None before its first poll."""


@dataclass(frozen=True)
class _Family:
    name: str
    documentation: str


# One entry per per-endpoint family, in the order they are rendered.
ENDPOINT_FAMILIES = (
    _Family(
        "atlas_interface_endpoint_status",
        "Connection status as a state set: 1 for the current status, 0 for the others.",
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
        "Cloud provider, name and user labels of each watched endpoint; always 1.",
    ),
    _Family(
        "atlas_interface_endpoint_alert_firing",
        "1 while the monitor's alert of this name is firing for the endpoint, else 0.",
    ),
)
_STATUS, _UP, _ERROR, _DELETE_REQUESTED, _SINCE, _LAST_SUCCESS, _INFO, _ALERT_FIRING = range(
    len(ENDPOINT_FAMILIES)
)
CONFIGURED = _Family("atlas_monitor_endpoints_configured", "Endpoints in the configuration.")
_NAMES = tuple(family.name for family in ENDPOINT_FAMILIES)
_FLAGS = ("0.0", "1.0")
"""A 0/1 gauge's value, indexed by the bool."""
_ALERTS = tuple((alert, alert.value) for alert in ENDPOINT_ALERTS)

# prometheus_client's own writers, typed here (they are untyped upstream).
_go_float = cast(Callable[[float], str], floatToGoString)
"""How prometheus_client writes sample values."""
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)


def user_labels_of(snapshot: Snapshot) -> tuple[str, ...]:
    """The union of the config's ``labels`` keys, which every info series carries."""
    return tuple(sorted({label for endpoint, _ in snapshot for label in endpoint.labels}))


class EndpointExposition:
    """The endpoint families as exposition text: what /metrics serves, and (parsed back) what
    the registry's EndpointCollector reports, so both always agree.

    Each endpoint's lines are written from a template holding everything but the values
    (built once per config), and kept until its state object changes: states are immutable
    and replaced on every poll, so "changed" is an identity check. A scrape during a cycle
    renders only the endpoints polled since the last one and joins the rest as they were.
    The text is the same in the Prometheus and the OpenMetrics format (gauges only).
    """

    def __init__(self) -> None:
        self._cache: dict[EndpointRef, _RenderedEndpoint] = {}

    def render(self, snapshot: Snapshot) -> Iterator[bytes]:
        """The families' text, in chunks of about CHUNK_BYTES.

        The cache is brought up to date here and now; the chunks are joined only as the
        returned iterator is consumed (by the thread that compresses them), so a scrape never
        holds the whole 30 MB at once. What it joins are immutable bytes, safe in any thread.
        """
        user_labels = user_labels_of(snapshot)
        rendered: dict[EndpointRef, _RenderedEndpoint] = {}
        lines: list[list[bytes]] = [[] for _ in ENDPOINT_FAMILIES]
        for endpoint, state in snapshot:
            cached = self._cache.get(endpoint.ref)
            if cached is None or not cached.shows(endpoint, state, user_labels):
                cached = _RenderedEndpoint.of(endpoint, state, user_labels, cached)
            rendered[endpoint.ref] = cached
            for family_lines, text in zip(lines, cached.texts, strict=True):
                family_lines.append(text)
        self._cache = rendered
        configured = f"{CONFIGURED.name} {_go_float(len(snapshot))}\n".encode()
        return _chunks(lines, _header(CONFIGURED) + configured)


def _chunks(lines: list[list[bytes]], configured: bytes) -> Iterator[bytes]:
    for family, family_lines in zip(ENDPOINT_FAMILIES, lines, strict=True):
        yield _header(family)
        yield from _batched(family_lines)
    yield configured


def _batched(pieces: list[bytes]) -> Iterator[bytes]:
    """Runs of ``pieces`` joined into chunks of about CHUNK_BYTES."""
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


class _Template:
    """One endpoint's sample lines up to the value: its labels never change with its state."""

    def __init__(self, endpoint: EndpointConfig, user_labels: tuple[str, ...]) -> None:
        ids = (
            f'group_id="{_escape(endpoint.group_id)}",'
            f'private_link_id="{_escape(endpoint.private_link_id)}",'
            f'interface_endpoint_id="{_escape(endpoint.interface_endpoint_id)}"'
        )
        self.user_labels = user_labels
        self._statuses = ENDPOINT_STATUSES[endpoint.cloud_provider]
        # Only the ids are kept, not 18 line prefixes: at 10,000 endpoints that is tens of MB.
        self._ids = ids
        # Status and alert lines depend on few possible values: written once, then reused.
        self._status_lines: dict[ConnectionStatus, bytes] = {}
        self._alert_lines: dict[frozenset[AlertName], bytes] = {}
        user_pairs = "".join(
            f',{key}="{_escape(endpoint.labels.get(key, ""))}"' for key in user_labels
        )
        name = _escape(endpoint.display_name)
        provider = endpoint.cloud_provider.value
        self._info = (
            f'{_NAMES[_INFO]}{{{ids},cloud_provider="{provider}",name="{name}"{user_pairs}}} 1.0\n'
        ).encode()

    def lines(self, state: EndpointState | None) -> tuple[bytes, ...]:
        """The endpoint's lines per family of ENDPOINT_FAMILIES.

        Every endpoint is named on _info and has its up and alert series; the last success
        needs one; status, error, deleteRequested and status age need a status from Atlas
        (none before the first answer, nor while Atlas answers 404).
        """
        texts = [b""] * len(ENDPOINT_FAMILIES)
        texts[_INFO] = self._info
        if state is None:
            texts[_UP] = self._line(_UP, "0.0")
            texts[_ALERT_FIRING] = self._alerts(frozenset())
            return tuple(texts)
        texts[_UP] = self._line(_UP, _FLAGS[state.up])
        texts[_ALERT_FIRING] = self._alerts(frozenset(state.firing))
        if state.last_success is not None:
            texts[_LAST_SUCCESS] = self._line(_LAST_SUCCESS, _go_float(state.last_success))
        if state.status is None:
            return tuple(texts)
        texts[_STATUS] = self._status(state.status)
        texts[_ERROR] = self._line(_ERROR, _FLAGS[state.error_message is not None])
        texts[_DELETE_REQUESTED] = self._line(_DELETE_REQUESTED, _FLAGS[state.delete_requested])
        if state.status_since is not None:
            texts[_SINCE] = self._line(_SINCE, _go_float(state.status_since))
        return tuple(texts)

    def _line(self, family: int, value: str) -> bytes:
        return f"{_NAMES[family]}{{{self._ids}}} {value}\n".encode()

    def _status(self, current: ConnectionStatus) -> bytes:
        text = self._status_lines.get(current)
        if text is None:
            text = "".join(
                f'{_NAMES[_STATUS]}{{{self._ids},status="{status.value}"}} '
                f"{_FLAGS[status is current]}\n"
                for status in self._statuses
            ).encode()
            self._status_lines[current] = text
        return text

    def _alerts(self, firing: frozenset[AlertName]) -> bytes:
        text = self._alert_lines.get(firing)
        if text is None:
            text = "".join(
                f'{_NAMES[_ALERT_FIRING]}{{{self._ids},alert="{value}"}} '
                f"{_FLAGS[alert in firing]}\n"
                for alert, value in _ALERTS
            ).encode()
            self._alert_lines[firing] = text
        return text


@dataclass(frozen=True)
class _RenderedEndpoint:
    endpoint: EndpointConfig
    state: EndpointState | None
    template: _Template
    texts: tuple[bytes, ...]

    @classmethod
    def of(
        cls,
        endpoint: EndpointConfig,
        state: EndpointState | None,
        user_labels: tuple[str, ...],
        previous: _RenderedEndpoint | None,
    ) -> _RenderedEndpoint:
        # After a reload every config object is new; an equal one keeps its template.
        if (
            previous is not None
            and previous.template.user_labels == user_labels
            and (previous.endpoint is endpoint or previous.endpoint == endpoint)
        ):
            template = previous.template
        else:
            template = _Template(endpoint, user_labels)
        return cls(endpoint, state, template, template.lines(state))

    def shows(
        self, endpoint: EndpointConfig, state: EndpointState | None, user_labels: tuple[str, ...]
    ) -> bool:
        return (
            self.state is state
            and self.endpoint is endpoint
            and self.template.user_labels == user_labels
        )


class EndpointCollector(Collector):
    """The endpoint families for the registry API (``get_sample_value``, prometheus_client
    tooling), parsed back from what ``EndpointExposition`` serves."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not read a state table that may not exist yet.
        for family in (*ENDPOINT_FAMILIES, CONFIGURED):
            yield GaugeMetricFamily(family.name, family.documentation)

    def collect(self) -> Iterator[Metric]:
        text = b"".join(EndpointExposition().render(self._snapshot())).decode()
        yield from text_string_to_metric_families(text)


def _header(family: _Family) -> bytes:
    documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {documentation}\n# TYPE {family.name} gauge\n".encode()


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

    def watch(
        self, snapshot: Callable[[], Snapshot], services: Callable[[], ServiceSnapshot] = list
    ) -> None:
        self.registry.register(EndpointCollector(snapshot))
        self._own.register(ServiceCollector(services))
        self._snapshot = snapshot

    def prepare(self) -> None:
        """Bring the exposition up to date without serving it: templates for endpoints new to
        the config are written now rather than in the next scrape (a quarter of a second at
        10,000 endpoints)."""
        self._exposition.render(self._snapshot())

    def render(self, *, openmetrics: bool = False) -> Iterator[bytes]:
        """The whole exposition, in the Prometheus text format or OpenMetrics, as chunks to
        be sent one after the other (never joined: at 10,000 endpoints that is 30 MB)."""
        endpoints = self._exposition.render(self._snapshot())
        if not openmetrics:
            return itertools.chain([generate_latest(self._own)], endpoints)
        own = _openmetrics_latest(self._own)
        return itertools.chain([own.removesuffix(OPENMETRICS_EOF)], endpoints, [OPENMETRICS_EOF])


class ServiceCollector(Collector):
    """Endpoint services (v2): a few per project, so plain families built at scrape time."""

    def __init__(self, snapshot: Callable[[], ServiceSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        status, up, error, info = families = self._families()
        for key, state in self._snapshot():
            ids = [key.group_id, key.service_id, key.cloud_provider.value]
            info.add_metric([*ids, (state.region if state else None) or ""], 1)
            up.add_metric(ids, state is not None and state.up)
            if state is None or state.status is None:
                continue
            error.add_metric(ids, state.error_message is not None)
            for known in SERVICE_STATUSES[key.cloud_provider]:
                status.add_metric([*ids, known.value], known is state.status)
        return iter(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        ids = ["group_id", "private_link_id", "cloud_provider"]
        return (
            GaugeMetricFamily(
                "atlas_endpoint_service_status",
                "Endpoint service status as a state set: 1 for the current status, 0 for the "
                "others.",
                labels=[*ids, "status"],
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_up",
                "1 if the last poll of the endpoint service got a valid answer.",
                labels=ids,
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_error",
                "1 if Atlas reports an errorMessage for the endpoint service.",
                labels=ids,
            ),
            GaugeMetricFamily(
                "atlas_endpoint_service_info",
                "Region of each watched endpoint service; always 1.",
                labels=[*ids, "region"],
            ),
        )


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
