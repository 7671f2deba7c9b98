"""Prometheus metrics: endpoint gauges rendered as the poller changes each endpoint's
state, plus the monitor's own counters and histograms, all in one private registry per daemon.

A scrape never calls Atlas and never waits for a poll: it serves whatever the last polls
left in the state table, which is what Prometheus' exporter guidelines ask for.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.atlas import LOCAL_RESOURCE_ERRNOS, EndpointRef, LocalResourceError, ServiceKey
from monitor.config import EndpointConfig
from monitor.free_text import LABEL_TEXT_MAX_CHARS, label_text
from monitor.log_output import write_errors
from monitor.polling.alerts import ENDPOINT_ALERTS, AlertName
from monitor.polling.state import EndpointState, ServiceState
from monitor.providers import ENDPOINT_STATUSES, SERVICE_STATUSES, ConnectionStatus

ADD_RESULTS = ("added", "dry_run", "failed")
OPENMETRICS_EOF = b"# EOF\n"
# Endpoints per piece of a family's text: a scrape during a cycle finds a few pieces changed
# (polls go down the config in order), and compresses only those; the rest is cached.
BLOCK_ENDPOINTS = 256
COMPRESS_EVERY = 0.25
"""Seconds between two rounds of background compression (MonitorMetrics.keep_compressed):
a block polls left at least this long ago is compressed before any scrape asks for it."""
# Level 1 compresses the repetitive exposition text nearly as well as the default 6, in
# half the time.
GZIP_LEVEL = 1
_RAW_DEFLATE = -15
"""wbits for a deflate stream with no header or trailer: Exposition.gzip writes those."""
# ID1 ID2, deflate, no flags, no modification time, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_FINAL_BLOCK = b"\x03\x00"
"""An empty final block of fixed codes: ends a deflate stream left open by sync flushes."""

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
    _Family(
        "atlas_interface_endpoint_error_message_info",
        f"Atlas' errorMessage, on one line of at most {LABEL_TEXT_MAX_CHARS} characters, while "
        "there is one; always 1.",
    ),
)
(
    _STATUS,
    _UP,
    _ERROR,
    _DELETE_REQUESTED,
    _SINCE,
    _LAST_SUCCESS,
    _INFO,
    _ALERT_FIRING,
    _ERROR_MESSAGE,
) = range(len(ENDPOINT_FAMILIES))
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
    (built once per config). ``sync`` walks the whole snapshot (at start and after a reload);
    between syncs the poller hands over each state it replaced (``changed``), whose lines are
    written then, in the poll that caused them, so a scrape never renders a whole cycle's
    worth at once. The text is kept as pieces of BLOCK_ENDPOINTS endpoints per family: a
    piece nobody's lines changed in is the very same object scrape after scrape, so its
    compressed form (see _Piece) is computed once, not per scrape, and ``settle`` lets a
    background task compute it for blocks the polls have left, before a scrape needs it.
    The text is the same in the Prometheus and the OpenMetrics format (gauges only).
    """

    def __init__(self) -> None:
        self._rendered: list[_RenderedEndpoint] = []
        self._index: dict[EndpointRef, int] = {}
        self._blocks: list[tuple[_Piece, ...]] = []
        self._configured = _Piece(())
        self._dirty: set[int] = set()
        """Blocks with an endpoint re-rendered since the block's pieces were built."""
        self._recent: set[int] = set()
        """Blocks with an endpoint re-rendered since the last ``settle``: polls may still be
        busy in them, so compressing them now would likely be wasted."""

    def sync(self, snapshot: Snapshot) -> None:
        """Bring everything up to date with ``snapshot``: configs, order and states."""
        user_labels = user_labels_of(snapshot)
        cache = dict(zip(self._index, self._rendered, strict=True))
        rendered = []
        for endpoint, state in snapshot:
            cached = cache.get(endpoint.ref)
            if cached is None or not cached.shows(endpoint, state, user_labels):
                cached = _RenderedEndpoint.of(endpoint, state, user_labels, cached)
            rendered.append(cached)
        self._rendered = rendered
        self._index = {entry.endpoint.ref: number for number, entry in enumerate(rendered)}
        self._dirty.clear()
        self._recent.clear()
        old_blocks = self._blocks
        self._blocks = [
            self._block(number, old_blocks[number] if number < len(old_blocks) else None)
            for number in range(-(-len(rendered) // BLOCK_ENDPOINTS))
        ]
        configured = f"{CONFIGURED.name} {_go_float(len(snapshot))}\n".encode()
        self._configured = _Piece((_header(CONFIGURED), configured))

    def changed(self, ref: EndpointRef, state: EndpointState | None) -> None:
        """Re-render ``ref`` showing ``state``, its new one; its block's pieces are rebuilt by
        the next ``update`` or ``settle``. An endpoint gone since the last sync is skipped (it
        dropped its lines)."""
        number = self._index.get(ref)
        if number is None:
            return
        previous = self._rendered[number]
        if previous.state is not state:
            self._rendered[number] = previous.with_state(state)
            block = number // BLOCK_ENDPOINTS
            self._dirty.add(block)
            self._recent.add(block)

    def update(self) -> None:
        """Rebuild the pieces of every block an endpoint was re-rendered in."""
        self._rebuild(self._dirty)

    def settle(self) -> list[_Piece]:
        """Rebuild the pieces of the blocks re-rendered before the previous ``settle`` and
        not since (the polls have left them), and return every piece not compressed yet
        except those of blocks still changing: what a background compression may do now."""
        self._rebuild(self._dirty - self._recent)
        busy = self._recent
        self._recent = set()
        pending = [
            piece
            for number, block in enumerate(self._blocks)
            if number not in busy
            for piece in block
            if not piece.is_compressed
        ]
        if not self._configured.is_compressed:
            pending.append(self._configured)
        return pending

    def _rebuild(self, blocks: set[int]) -> None:
        for block in blocks:
            self._blocks[block] = self._block(block, self._blocks[block])
        self._dirty -= blocks

    def pieces(self) -> tuple[_Piece, ...]:
        """The families' text as of the last sync and update."""
        pieces = []
        for family, header in enumerate(_HEADERS):
            pieces.append(header)
            pieces.extend(block[family] for block in self._blocks)
        pieces.append(self._configured)
        return tuple(pieces)

    def _block(self, number: int, old: tuple[_Piece, ...] | None) -> tuple[_Piece, ...]:
        """Block ``number``'s piece per family; a piece whose text is unchanged stays the old
        object, with its compressed form."""
        members = self._rendered[number * BLOCK_ENDPOINTS : (number + 1) * BLOCK_ENDPOINTS]
        block = []
        for family in range(len(ENDPOINT_FAMILIES)):
            parts = tuple(member.texts[family] for member in members)
            if old is not None and old[family].parts == parts:
                block.append(old[family])
            else:
                block.append(_Piece(parts))
        return tuple(block)


class _Piece:
    """A run of exposition text and, once asked for, its compressed form: a raw deflate
    stream of its own that ends on a byte boundary without closing the stream, so the
    compressed pieces of a body concatenate into one gzip member (see Exposition.gzip).

    Compression happens in a worker thread. Two threads may compress the same piece at
    once; both get the same bytes, so whichever stores its result last changes nothing.
    """

    __slots__ = ("_compressed", "parts")

    def __init__(self, parts: tuple[bytes, ...]) -> None:
        self.parts = parts
        self._compressed: _Compressed | None = None

    def raw(self) -> bytes:
        return b"".join(self.parts)

    @property
    def is_compressed(self) -> bool:
        return self._compressed is not None

    def compressed(self) -> _Compressed:
        compressed = self._compressed
        if compressed is None:
            raw = self.raw()
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _RAW_DEFLATE)
            deflated = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
            compressed = self._compressed = _Compressed(deflated, zlib.crc32(raw), len(raw))
        return compressed


class _Compressed(NamedTuple):
    deflated: bytes
    crc: int
    size: int


@dataclass(frozen=True)
class Exposition:
    """What one scrape serves, fixed on the event loop; reading it (as text or gzipped)
    touches only immutable text, so it may happen in any thread."""

    pieces: tuple[_Piece, ...]

    def chunks(self) -> Iterator[bytes]:
        """The text, piece by piece (never joined: at 10,000 endpoints that is 30 MB)."""
        for piece in self.pieces:
            raw = piece.raw()
            if raw:
                yield raw

    def gzip(self) -> bytes:
        """The text as one gzip member (RFC 1952): a header, the pieces' deflate streams one
        after the other, an empty final block, then the CRC-32 and size of the whole text.

        Only pieces not compressed yet (neither by an earlier scrape nor by
        MonitorMetrics.keep_compressed since they changed) are compressed here; the CRC
        of the whole is combined from the pieces' (see _crc32_combine), not computed over
        30 MB again.
        """
        crc = 0
        size = 0
        body = [_GZIP_HEADER]
        for piece in self.pieces:
            compressed = piece.compressed()
            body.append(compressed.deflated)
            crc = _crc32_combine(crc, compressed.crc, compressed.size)
            size += compressed.size
        body.append(_FINAL_BLOCK)
        body.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
        return b"".join(body)


def _load_crc32_combine() -> Callable[[int, int, int], int] | None:
    """zlib's crc32_combine from the libz the zlib module uses, if it can be found.

    PyDLL keeps the GIL during the call: it takes a microsecond, and releasing the GIL
    around each of a few hundred calls would let a busy event loop delay every one of them.
    """
    name = ctypes.util.find_library("z")
    if name is None:
        return None
    try:
        function = ctypes.PyDLL(name).crc32_combine
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int64)
    function.restype = ctypes.c_ulong
    return cast(Callable[[int, int, int], int], function)


_libz_crc32_combine = _load_crc32_combine()


def _crc32_combine(crc1: int, crc2: int, size2: int) -> int:
    """The CRC-32 of A + B from A's, B's and B's length: zlib's crc32_combine, which Python's
    zlib module does not expose."""
    if _libz_crc32_combine is not None:
        return _libz_crc32_combine(crc1, crc2, size2)
    return _crc32_combine_python(crc1, crc2, size2)


def _crc32_combine_python(crc1: int, crc2: int, size2: int) -> int:
    """crc32_combine as zlib 1.2.12 computes it: crc1 times x^(8 * size2) modulo the CRC
    polynomial, plus crc2. About 50 times slower than libz's, for where libz is not found."""
    factor = 0x80000000  # x^0 in zlib's reflected bit order
    power = 3  # x^(2^3) = x^8: one byte
    while size2:
        if size2 & 1:
            factor = _multiply_mod_p(_X2N[power & 31], factor)
        size2 >>= 1
        power += 1
    return _multiply_mod_p(factor, crc1) ^ crc2


def _multiply_mod_p(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial, both in zlib's reflected bit order."""
    product = 0
    mask = 0x80000000
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ 0xEDB88320 if b & 1 else b >> 1
    return product


def _powers_of_x() -> tuple[int, ...]:
    """x^(2^n) modulo the CRC-32 polynomial for n = 0..31, as zlib's x2n_table."""
    powers = [0x40000000]  # x^1
    for _ in range(31):
        powers.append(_multiply_mod_p(powers[-1], powers[-1]))
    return tuple(powers)


_X2N = _powers_of_x()


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
        self._error_message_line: tuple[str | None, bytes] = (None, b"")
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
        (none before the first answer, nor while Atlas answers 404), and the errorMessage
        series a message as well.
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
        if state.error_message is not None:
            texts[_ERROR_MESSAGE] = self._error_message(state.error_message)
        texts[_DELETE_REQUESTED] = self._line(_DELETE_REQUESTED, _FLAGS[state.delete_requested])
        if state.status_since is not None:
            texts[_SINCE] = self._line(_SINCE, _go_float(state.status_since))
        return tuple(texts)

    def _line(self, family: int, value: str) -> bytes:
        return f"{_NAMES[family]}{{{self._ids}}} {value}\n".encode()

    def _error_message(self, message: str) -> bytes:
        """The message's own series: Atlas' free text never goes on the status or info
        series, whose label sets must not change with it. Kept for the next poll, which
        nearly always brings the same message."""
        if self._error_message_line[0] != message:
            text = _escape(label_text(message))
            line = f'{_NAMES[_ERROR_MESSAGE]}{{{self._ids},error_message="{text}"}} 1.0\n'
            self._error_message_line = (message, line.encode())
        return self._error_message_line[1]

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

    def with_state(self, state: EndpointState | None) -> _RenderedEndpoint:
        """The same endpoint, config and labels, showing ``state``."""
        return _RenderedEndpoint(self.endpoint, state, self.template, self.template.lines(state))

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
        exposition = EndpointExposition()
        exposition.sync(self._snapshot())
        text = b"".join(Exposition(exposition.pieces()).chunks()).decode()
        yield from text_string_to_metric_families(text)


def _header(family: _Family) -> bytes:
    documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {documentation}\n# TYPE {family.name} gauge\n".encode()


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_HEADERS = tuple(_Piece((_header(family),)) for family in ENDPOINT_FAMILIES)
_EOF = _Piece((OPENMETRICS_EOF,))


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
            return Exposition((_Piece((generate_latest(self._own),)), *endpoints))
        own = _openmetrics_latest(self._own).removesuffix(OPENMETRICS_EOF)
        return Exposition((_Piece((own,)), *endpoints, _EOF))

    async def keep_compressed(self, every: float = COMPRESS_EVERY) -> None:
        """Until cancelled, every ``every`` seconds: compress the pieces of the blocks polls
        have left, in one worker thread call, so that a scrape, even one after a whole cycle,
        compresses only the blocks still being polled. The daemon's app runs this for as
        long as it serves.

        Pieces are immutable text, so a reload or a scrape meanwhile is harmless: a reload
        drops pieces this may still compress, and a scrape compressing the same piece at
        once gets the same bytes (see _Piece).
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            pending = self.settled()
            if pending:
                await loop.run_in_executor(None, _compress, pending)

    def settled(self) -> Sequence[_Piece]:
        """The pieces a background compression may compress now (EndpointExposition.settle);
        called once per round, as it tells blocks changed since the previous call apart."""
        return self._exposition.settle() if self._prepared else ()


def _compress(pieces: Sequence[_Piece]) -> None:
    for piece in pieces:
        piece.compressed()


class ServiceCollector(Collector):
    """Endpoint services (v2): a few per project, so plain families built at scrape time."""

    def __init__(self, snapshot: Callable[[], ServiceSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        status, up, error, error_message, info = families = self._families()
        for key, state in self._snapshot():
            ids = [key.group_id, key.service_id, key.cloud_provider.value]
            info.add_metric([*ids, (state.region if state else None) or ""], 1)
            up.add_metric(ids, state is not None and state.up)
            if state is None or state.status is None:
                continue
            error.add_metric(ids, state.error_message is not None)
            if state.error_message is not None:
                error_message.add_metric([*ids, label_text(state.error_message)], 1)
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
                "atlas_endpoint_service_error_message_info",
                "Atlas' errorMessage for the endpoint service, on one line of at most "
                f"{LABEL_TEXT_MAX_CHARS} characters, while there is one; always 1.",
                labels=[*ids, "error_message"],
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
