"""The per-endpoint families, hand-built as exposition text (the one measured exception to
prometheus_client's collectors; see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.atlas import EndpointRef
from monitor.config import EndpointConfig
from monitor.exposition.cache import Exposition, Piece
from monitor.free_text import LABEL_TEXT_MAX_CHARS, label_text
from monitor.polling.alerts import ENDPOINT_ALERTS, AlertName
from monitor.polling.state import EndpointState
from monitor.providers import ENDPOINT_STATUSES, ConnectionStatus

# Endpoints per piece of a family's text: a scrape during a cycle finds a few pieces changed
# (polls go down the config in order), and compresses only those; the rest is cached.
BLOCK_ENDPOINTS = 256

Snapshot = Sequence[tuple[EndpointConfig, EndpointState | None]]
"""Every watched endpoint with its state, or None before its first poll."""


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
    compressed form (see Piece) is computed once, not per scrape, and ``settle`` lets a
    background task compute it for blocks the polls have left, before a scrape needs it.
    The text is the same in the Prometheus and the OpenMetrics format (gauges only).
    """

    def __init__(self) -> None:
        self._rendered: list[_RenderedEndpoint] = []
        self._index: dict[EndpointRef, int] = {}
        self._blocks: list[tuple[Piece, ...]] = []
        self._configured = Piece(())
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
        self._configured = Piece((_header(CONFIGURED), configured))

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

    def settle(self) -> list[Piece]:
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

    def pieces(self) -> tuple[Piece, ...]:
        """The families' text as of the last sync and update."""
        pieces = []
        for family, header in enumerate(_HEADERS):
            pieces.append(header)
            pieces.extend(block[family] for block in self._blocks)
        pieces.append(self._configured)
        return tuple(pieces)

    def _block(self, number: int, old: tuple[Piece, ...] | None) -> tuple[Piece, ...]:
        """Block ``number``'s piece per family; a piece whose text is unchanged stays the old
        object, with its compressed form."""
        members = self._rendered[number * BLOCK_ENDPOINTS : (number + 1) * BLOCK_ENDPOINTS]
        block = []
        for family in range(len(ENDPOINT_FAMILIES)):
            parts = tuple(member.texts[family] for member in members)
            if old is not None and old[family].parts == parts:
                block.append(old[family])
            else:
                block.append(Piece(parts))
        return tuple(block)


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


_HEADERS = tuple(Piece((_header(family),)) for family in ENDPOINT_FAMILIES)
