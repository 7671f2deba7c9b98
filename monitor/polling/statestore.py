"""Restart-safe state: what the daemon knows about each endpoint, kept in one SQLite file.

An operator relies on a few facts surviving a restart (an OOM kill, a node drain, a rolling
deploy): which alerts are firing, since when an endpoint has had its status, how many POSTs
add-on-missing has made. The standard library's ``sqlite3`` in WAL mode keeps them in one
file on a volume, with no server; every write is one transaction, so a ``kill -9`` at any
moment leaves the file as of the last commit, never half of one.

Only this module touches the file. It is opened once per process, under an exclusive lock
(``<path>.lock``) so two monitors can never write the same file, and written from one worker
thread, so a commit never blocks the event loop. What goes in and out are the pure state
objects of ``monitor.polling.state``; the rules stay there.

A file that cannot be used (unreadable, corrupt, read-only, written by a newer schema) is
never a crash and never silently replaced: ``state_store_unavailable`` is logged with the
path and the cause, the daemon keeps its state in memory, and
``atlas_monitor_state_store_up`` says 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from monitor.atlas import EndpointRef, ServiceKey
from monitor.config import EndpointConfig
from monitor.polling.alerts import AlertName
from monitor.polling.state import EndpointState, ServiceState
from monitor.providers import CloudProvider, ConnectionStatus, ServiceStatus

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
"""Kept in ``PRAGMA user_version``; a file with a lower one is rebuilt (with a warning)."""
LOCK_RETRY_SECONDS = 0.1

_ENDPOINT_KEY = ("group_id", "private_link_id", "cloud_provider", "interface_endpoint_id")
_SERVICE_KEY = ("group_id", "cloud_provider", "service_id")


def _read_firing(text: str) -> dict[AlertName, float]:
    """Firing alerts are kept as JSON: ``{"rejected": <unix time last emitted>}``."""
    return {AlertName(alert): float(at) for alert, at in json.loads(text).items()}


# One table per variation point: each kept field of a state, and how its value is read back
# (None = as stored); ``firing`` comes last (see _encode). ``up`` is not kept: it says
# whether *this* process has had an answer.
_ENDPOINT_FIELDS: Mapping[str, Callable[[Any], Any] | None] = {
    "status": ConnectionStatus,
    "raw_status": None,
    "status_since": None,
    "provisioning_since": None,
    "error_message": None,
    "delete_requested": bool,
    "missing": bool,
    "missing_reason": None,
    "consecutive_failures": None,
    "last_success": None,
    "last_failure": None,
    "added_by_monitor": bool,
    "add_attempts": None,
    "recreate_deletes": None,
    "dry_run_reported": bool,
    "firing": _read_firing,
}
_SERVICE_FIELDS: Mapping[str, Callable[[Any], Any] | None] = {
    "status": ServiceStatus,
    "raw_status": None,
    "region": None,
    "error_message": None,
    "missing": bool,
    "last_failure": None,
    "firing": _read_firing,
}

_SCHEMA = (
    f"""CREATE TABLE endpoints (
        group_id TEXT NOT NULL, private_link_id TEXT NOT NULL, cloud_provider TEXT NOT NULL,
        interface_endpoint_id TEXT NOT NULL, name TEXT, {", ".join(_ENDPOINT_FIELDS)},
        PRIMARY KEY ({", ".join(_ENDPOINT_KEY)})
    ) WITHOUT ROWID""",
    f"""CREATE TABLE endpoint_services (
        group_id TEXT NOT NULL, cloud_provider TEXT NOT NULL, service_id TEXT NOT NULL,
        {", ".join(_SERVICE_FIELDS)},
        PRIMARY KEY ({", ".join(_SERVICE_KEY)})
    ) WITHOUT ROWID""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_ENDPOINT_COLUMNS = (*_ENDPOINT_KEY, "name", *_ENDPOINT_FIELDS)
_SERVICE_COLUMNS = (*_SERVICE_KEY, *_SERVICE_FIELDS)


# Statements are built from the column tables above, never from input (hence the noqa).
def _select(table: str, columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608


def _upsert(table: str, columns: tuple[str, ...]) -> str:
    placeholders = ", ".join("?" for _ in columns)
    return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608


def _delete(table: str, key: tuple[str, ...]) -> str:
    return f"DELETE FROM {table} WHERE {' AND '.join(f'{column} = ?' for column in key)}"  # noqa: S608


_SELECT_ENDPOINTS = _select("endpoints", _ENDPOINT_COLUMNS)
_SELECT_SERVICES = _select("endpoint_services", _SERVICE_COLUMNS)
_UPSERT_ENDPOINT = _upsert("endpoints", _ENDPOINT_COLUMNS)
_UPSERT_SERVICE = _upsert("endpoint_services", _SERVICE_COLUMNS)
_DELETE_ENDPOINT = _delete("endpoints", _ENDPOINT_KEY)
_DELETE_SERVICE = _delete("endpoint_services", _SERVICE_KEY)


class StateStoreLocked(Exception):
    """Another process holds the state file; this one must not start on it."""

    def __init__(self, path: Path, waited: float) -> None:
        super().__init__(
            f"state file {path} is in use by another atlas-endpoint-monitor process "
            f"(its lock {_lock_path(path)} stayed held for {waited:g} s); give each process "
            "its own state.path, or stop the other one"
        )


@dataclass(frozen=True)
class SavedEndpoint:
    endpoint: EndpointConfig
    """The ids and the name it had, enough to resolve its alerts if it is gone now."""
    state: EndpointState


@dataclass(frozen=True)
class SavedState:
    endpoints: dict[EndpointRef, SavedEndpoint] = field(default_factory=dict)
    services: dict[ServiceKey, ServiceState] = field(default_factory=dict)


@dataclass
class Batch:
    """Everything one transaction writes: states to keep (as they are now) and keys to drop."""

    endpoints: list[tuple[EndpointConfig, EndpointState]] = field(default_factory=list)
    services: list[tuple[ServiceKey, ServiceState]] = field(default_factory=list)
    dropped_endpoints: list[EndpointRef] = field(default_factory=list)
    dropped_services: list[ServiceKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.endpoints or self.services or self.dropped_endpoints or self.dropped_services
        )


class PendingWrites:
    """The keys changed or dropped since the last save. States are read when the batch is
    taken, so a batch always holds the newest ones, however often a key changed."""

    def __init__(self) -> None:
        self._endpoints: set[EndpointRef] = set()
        self._services: set[ServiceKey] = set()
        self._dropped_endpoints: set[EndpointRef] = set()
        self._dropped_services: set[ServiceKey] = set()

    def endpoint_changed(self, ref: EndpointRef) -> None:
        self._endpoints.add(ref)

    def endpoint_dropped(self, ref: EndpointRef) -> None:
        self._endpoints.discard(ref)
        self._dropped_endpoints.add(ref)

    def service_changed(self, key: ServiceKey) -> None:
        self._services.add(key)

    def service_dropped(self, key: ServiceKey) -> None:
        self._services.discard(key)
        self._dropped_services.add(key)

    def take(
        self,
        endpoints: Mapping[EndpointRef, EndpointConfig],
        states: Mapping[EndpointRef, EndpointState],
        services: Mapping[ServiceKey, ServiceState],
    ) -> Batch:
        """Everything pending, as one batch, and nothing pending any more. ``endpoints``:
        the watched ones (a key no longer watched has nothing to save)."""
        batch = Batch(
            endpoints=[
                (endpoints[ref], states[ref])
                for ref in self._endpoints
                if ref in endpoints and ref in states
            ],
            services=[(key, services[key]) for key in self._services if key in services],
            dropped_endpoints=list(self._dropped_endpoints),
            dropped_services=list(self._dropped_services),
        )
        self._endpoints, self._services = set(), set()
        self._dropped_endpoints, self._dropped_services = set(), set()
        return batch

    def put_back(self, batch: Batch) -> None:
        """After a failed save: pending again, for the next one. Drops are written before
        states, so a key dropped and then watched again still ends up kept."""
        self._endpoints |= {endpoint.ref for endpoint, _ in batch.endpoints}
        self._services |= {key for key, _ in batch.services}
        self._dropped_endpoints |= set(batch.dropped_endpoints)
        self._dropped_services |= set(batch.dropped_services)


class StateStore:
    """One process's state file: the lock, the connection and the thread that writes.

    Build it with ``open``; ``up`` is False when the file could not be used (the daemon then
    runs in memory) or the last write failed (it is retried with the next one).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.up = False
        self.saved = SavedState()
        self._lock_fd: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")

    @classmethod
    def open(
        cls,
        path: Path,
        lock_wait_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> StateStore:
        """Lock, open and read the file. Raises StateStoreLocked when another process keeps
        it locked for ``lock_wait_seconds``; every other problem leaves a store that is not
        up, logged as ``state_store_unavailable``."""
        store = cls(path)
        try:
            store._lock(lock_wait_seconds, clock, sleep)
            store._connect()
            store.saved = store._read()
        except StateStoreLocked:
            store.close()
            raise
        except (sqlite3.Error, OSError, ValueError, ValidationError) as error:
            store._close_connection()
            store._unavailable(error)
            return store
        store.up = True
        log.info(
            "state_store_opened",
            path=str(path),
            endpoints=len(store.saved.endpoints),
            endpoint_services=len(store.saved.services),
        )
        return store

    @property
    def usable(self) -> bool:
        """False when opening failed: nothing is written for the life of the process."""
        return self._connection is not None

    def _lock(
        self, wait_seconds: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        """An exclusive flock on a sibling file, held until ``close`` (or the process dies,
        which releases it at once, so a kill -9 never leaves a stale lock).

        A sibling rather than the database itself: SQLite takes its own POSIX locks on the
        database, and on file systems that emulate flock with them the two would collide.
        """
        self._lock_fd = os.open(_lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        started = clock()
        for attempt in itertools.count():
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                waited = clock() - started
                if waited >= wait_seconds:
                    raise StateStoreLocked(self.path, wait_seconds) from None
                if attempt == 0:
                    log.info(
                        "state_store_waiting_for_lock",
                        path=str(self.path),
                        wait_seconds=wait_seconds,
                    )
                sleep(min(LOCK_RETRY_SECONDS, wait_seconds - waited))

    def _connect(self) -> None:
        # The connection is made here and then used only by the writer thread, one call at
        # a time, hence check_same_thread=False; isolation_level=None: we say BEGIN ourselves.
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._connection = connection
        # Read before anything is written: a newer monitor's file must stay as it was.
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"written by a newer atlas-endpoint-monitor (schema {version}; this one reads "
                f"{SCHEMA_VERSION}); left untouched"
            )
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")
        # NORMAL in WAL mode: a commit survives the process dying at any moment; only a power
        # loss may take back the last commits, which costs a repeated alert, not a lie.
        connection.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION or not self._has_tables():
            self._rebuild(version)
        problem = connection.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {problem}")
        # One write now: a read-only file (or volume) opens and reads like a good one, and
        # would otherwise be found out only at the first save.
        with self._transaction() as writing:
            writing.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _has_tables(self) -> bool:
        assert self._connection is not None
        names = {row[0] for row in self._connection.execute("SELECT name FROM sqlite_master")}
        return {"endpoints", "endpoint_services"} <= names

    def _rebuild(self, version: int) -> None:
        """Schema 1 is the first, so there is nothing to migrate from: whatever an older
        file holds is dropped, with a warning, and the tables made afresh."""
        assert self._connection is not None
        tables = [
            row[0]
            for row in self._connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        if tables:
            log.warning(
                "state_store_rebuilt",
                path=str(self.path),
                from_schema=version,
                to_schema=SCHEMA_VERSION,
                reason="written by an older version; its state is dropped",
            )
        with self._transaction() as connection:
            for table in tables:
                connection.execute(f'DROP TABLE "{table}"')
            for statement in _SCHEMA:
                connection.execute(statement)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        assert self._connection is not None
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield self._connection
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")

    def _read(self) -> SavedState:
        assert self._connection is not None
        endpoints = {}
        for row in self._connection.execute(_SELECT_ENDPOINTS):
            group_id, private_link_id, provider, endpoint_id, name, *values = row
            endpoint = EndpointConfig(
                group_id=group_id,
                private_link_id=private_link_id,
                cloud_provider=CloudProvider(provider),
                interface_endpoint_id=endpoint_id,
                name=name,
            )
            state = EndpointState(**_decode(_ENDPOINT_FIELDS, values))
            endpoints[endpoint.ref] = SavedEndpoint(endpoint, state)
        services = {}
        for row in self._connection.execute(_SELECT_SERVICES):
            group_id, provider, service_id, *values = row
            key = ServiceKey(group_id, CloudProvider(provider), service_id)
            services[key] = ServiceState(**_decode(_SERVICE_FIELDS, values))
        return SavedState(endpoints, services)

    async def save(self, batch: Batch) -> bool:
        """Write ``batch`` in one transaction on the writer thread; False if it failed (logged,
        ``up`` 0), so the caller keeps it for the next attempt."""
        if not self.usable:
            return False
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self.write, batch)
        except (sqlite3.Error, OSError) as error:
            if self.up:
                self._unavailable(error)
            self.up = False
            return False
        if not self.up:
            log.info("state_store_recovered", path=str(self.path))
        self.up = True
        return True

    def write(self, batch: Batch) -> None:
        """One transaction: the drops, then the states (so a key dropped and watched again
        in the same batch ends up kept)."""
        with self._transaction() as connection:
            connection.executemany(
                _DELETE_ENDPOINT,
                [_endpoint_key(ref) for ref in batch.dropped_endpoints],
            )
            connection.executemany(
                _DELETE_SERVICE,
                [_service_key(key) for key in batch.dropped_services],
            )
            connection.executemany(
                _UPSERT_ENDPOINT,
                [
                    (*_endpoint_key(endpoint.ref), endpoint.name, *_encode(_endpoint_values(state)))
                    for endpoint, state in batch.endpoints
                ],
            )
            connection.executemany(
                _UPSERT_SERVICE,
                [
                    (*_service_key(key), *_encode(_service_values(state)))
                    for key, state in batch.services
                ],
            )

    def close(self) -> None:
        """Finish the writes under way, close the file and release the lock."""
        self._writer.shutdown(wait=True)
        self._close_connection()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _unavailable(self, error: BaseException) -> None:
        log.warning(
            "state_store_unavailable",
            path=str(self.path),
            cause=f"{type(error).__name__}: {error}",
            consequence="state is kept in memory only; a restart forgets it",
        )


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _endpoint_key(ref: EndpointRef) -> tuple[str, str, str, str]:
    return (ref.group_id, ref.private_link_id, ref.cloud_provider.value, ref.interface_endpoint_id)


def _service_key(key: ServiceKey) -> tuple[str, str, str]:
    return (key.group_id, key.cloud_provider.value, key.service_id)


_endpoint_values = operator.attrgetter(*_ENDPOINT_FIELDS)
_service_values = operator.attrgetter(*_SERVICE_FIELDS)


def _encode(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A state's fields as stored: as they are, but the firing alerts (last) as JSON. Every
    row is written every cycle (``last_success`` moves), so this stays a few microseconds."""
    *plain, firing = values
    return (
        *plain,
        json.dumps({alert.value: at for alert, at in firing.items()}) if firing else "{}",
    )


def _decode(
    fields: Mapping[str, Callable[[Any], Any] | None], values: Iterable[Any]
) -> dict[str, Any]:
    return {
        name: value if value is None or read is None else read(value)
        for (name, read), value in zip(fields.items(), values, strict=True)
    }
