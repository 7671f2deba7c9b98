"""The state file: what it keeps, how it fails, and what a restart does with it.

The first part drives ``StateStore`` and ``Monitor`` in this process against the in-repo
simulator; the second runs ``atlas-endpoint-monitor run`` as real child processes, killed
with SIGKILL at random moments of a cycle, stopped with SIGTERM, and started twice on one
file. Every wait is bounded and waits for an event (a log line), never a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.atlas import EndpointRef, InterfaceEndpoint, ServiceKey
from monitor.config import EndpointConfig
from monitor.polling.alerts import AlertName
from monitor.polling.state import EndpointState, ServiceState
from monitor.polling.statestore import SCHEMA_VERSION, Batch, StateStore, StateStoreLocked
from monitor.providers import CloudProvider, ConnectionStatus, ServiceStatus
from monitor.simulator import Fault, Scenario, ScenarioService
from tests.helpers import (
    AWS_SERVICE,
    GROUP_ID,
    WARNINGS_ENV,
    FakeClock,
    Process,
    StartSimulator,
    alerts_in,
    assert_clean_shutdown,
    at_atlas,
    config_document,
    endpoint_entry,
    endpoint_id,
    events_in,
    http_get,
    ids_of,
    is_event,
    json_event,
    monitoring,
    settings_for,
    simulated,
    subprocess_env,
    unused_port,
    v2_settings,
)

REJECTED = endpoint_entry(interface_endpoint_id=endpoint_id(1), name="rejected")
FIXED = endpoint_entry(interface_endpoint_id=endpoint_id(2), name="fixed-while-down")
HEALTHY = endpoint_entry(interface_endpoint_id=endpoint_id(3), name="healthy")


def open_store(path: Path, wait: float = 0) -> StateStore:
    return StateStore.open(path, lock_wait_seconds=wait)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[StateStore]:
    store = open_store(path)
    try:
        yield store
    finally:
        store.close()


def endpoint(entry: Mapping[str, Any]) -> EndpointConfig:
    return EndpointConfig.model_validate(entry)


# --- the store on its own ----------------------------------------------------------------


async def test_every_kept_field_survives_a_round_trip_and_up_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = EndpointState(
        status=ConnectionStatus.REJECTED,
        raw_status="REJECTED",
        status_since=1000.5,
        provisioning_since=None,
        error_message="the VPC endpoint was rejected",
        delete_requested=True,
        up=True,
        missing=False,
        consecutive_failures=2,
        last_success=1010.25,
        last_failure="503 SERVICE_UNAVAILABLE",
        firing={AlertName.REJECTED: 1000.5, AlertName.ERROR_MESSAGE: 1001.0},
        added_by_monitor=True,
        add_attempts=2,
        recreate_deletes=1,
        dry_run_reported=True,
    )
    service_key = ServiceKey(REJECTED["group_id"], CloudProvider.AWS, REJECTED["private_link_id"])
    service = ServiceState(
        status=ServiceStatus.FAILED,
        raw_status="FAILED",
        region="us-east-1",
        error_message="quota exceeded",
        firing={AlertName.SERVICE_FAILED: 999.0},
    )
    with opened(path) as store:
        assert store.up
        assert await store.save(
            Batch(endpoints=[(endpoint(REJECTED), state)], services=[(service_key, service)])
        )

    with opened(path) as store:
        saved = store.saved
    (ref,) = saved.endpoints
    assert ref == endpoint(REJECTED).ref
    assert saved.endpoints[ref].endpoint.display_name == "rejected"
    assert saved.endpoints[ref].state == EndpointState(**{**vars(state), "up": False})
    assert saved.services == {service_key: service}


async def test_dropped_keys_are_deleted_in_the_same_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    kept, gone = endpoint(HEALTHY), endpoint(REJECTED)
    with opened(path) as store:
        await store.save(Batch(endpoints=[(kept, EndpointState()), (gone, EndpointState())]))
        await store.save(Batch(dropped_endpoints=[gone.ref]))
    with opened(path) as store:
        assert set(store.saved.endpoints) == {kept.ref}


async def test_a_key_dropped_and_watched_again_in_one_batch_is_kept(tmp_path: Path) -> None:
    """Drops are written first: what a failed save put back next to a later change."""
    path = tmp_path / "state.db"
    again = endpoint(HEALTHY)
    with opened(path) as store:
        await store.save(Batch(endpoints=[(again, EndpointState(add_attempts=1))]))
        await store.save(
            Batch(endpoints=[(again, EndpointState(add_attempts=2))], dropped_endpoints=[again.ref])
        )
    with opened(path) as store:
        assert store.saved.endpoints[again.ref].state.add_attempts == 2


def test_a_file_of_an_older_schema_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.execute("CREATE TABLE endpoints (id TEXT PRIMARY KEY, status TEXT)")
        old.execute("INSERT INTO endpoints VALUES ('vpce-1', 'REJECTED')")
        old.commit()
    with capture_logs() as logs, opened(path) as store:
        assert store.up
        assert store.saved.endpoints == {}
    (rebuilt,) = events_in(logs, "state_store_rebuilt")
    assert (rebuilt["from_schema"], rebuilt["to_schema"], rebuilt["path"]) == (0, 1, str(path))
    assert rebuilt["log_level"] == "warning"
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_of_a_newer_schema_is_left_untouched_and_the_daemon_runs_in_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with capture_logs() as logs, opened(path) as store:
        assert not store.up
    (warning,) = events_in(logs, "state_store_unavailable")
    assert "newer" in warning["cause"]
    assert path.read_bytes() == before


async def test_a_corrupt_file_is_a_warning_naming_path_and_cause_and_is_kept_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    garbage = b"this is not a database, just junk left by something else\n" * 100
    path.write_bytes(garbage)
    with capture_logs() as logs, opened(path) as store:
        assert not store.up
        assert not store.usable
        assert not await store.save(Batch(endpoints=[(endpoint(HEALTHY), EndpointState())]))
    (warning,) = events_in(logs, "state_store_unavailable")
    assert warning["log_level"] == "warning"
    assert warning["path"] == str(path)
    assert "DatabaseError: file is not a database" in warning["cause"]
    assert path.read_bytes() == garbage, "a corrupt file is evidence, never overwritten"


def test_a_missing_directory_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "state.db"
    with capture_logs() as logs, opened(path) as store:
        assert not store.up
    (warning,) = events_in(logs, "state_store_unavailable")
    assert "No such file or directory" in warning["cause"]


def test_a_second_open_of_a_locked_file_waits_then_refuses_naming_the_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock(0.0)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    with opened(path), pytest.raises(StateStoreLocked) as refused:
        StateStore.open(path, lock_wait_seconds=1.0, clock=clock, sleep=sleep)
    assert str(path) in str(refused.value)
    assert "in use by another atlas-endpoint-monitor process" in str(refused.value)
    assert sum(waits) == pytest.approx(1.0)
    with opened(path) as store:  # released by close
        assert store.up


async def test_a_failed_write_is_one_warning_then_retried_and_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    first, second = endpoint(REJECTED), endpoint(HEALTHY)
    with opened(path) as store:
        real_write = store.write

        def full_disk(batch: Batch) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "write", full_disk)
        with capture_logs() as logs:
            assert not await store.save(Batch(endpoints=[(first, EndpointState())]))
            assert not await store.save(Batch(endpoints=[(first, EndpointState())]))
            assert not store.up
            monkeypatch.setattr(store, "write", real_write)
            assert await store.save(Batch(endpoints=[(second, EndpointState())]))
            assert store.up
    assert [line["event"] for line in logs] == [
        "state_store_unavailable",
        "state_store_recovered",
    ]
    assert "database or disk is full" in logs[0]["cause"]


# --- a Monitor with a store, restarted in this process -----------------------------------


def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each StateStore.write is one transaction; returns the batch sizes, as they happen."""
    sizes: list[int] = []
    real = StateStore.write

    def counted(self: StateStore, batch: Batch) -> None:
        sizes.append(len(batch.endpoints))
        real(self, batch)

    monkeypatch.setattr(StateStore, "write", counted)
    return sizes


async def test_a_quiet_cycle_is_one_transaction_however_many_endpoints(
    tmp_path: Path, start_simulator: StartSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [endpoint_entry(interface_endpoint_id=endpoint_id(n)) for n in range(1, 51)]
    _, url = await start_simulator(
        Scenario(endpoints=[simulated(entry, status="AVAILABLE") for entry in entries])
    )
    settings = settings_for(url, endpoints=entries)
    writes = count_writes(monkeypatch)
    with opened(tmp_path / "state.db") as store:
        async with monitoring(settings, store=store) as (monitor, client):
            await monitor.run_cycle(client)  # every status is new: saved as it changes
            writes.clear()
            await monitor.run_cycle(client)
            await monitor.run_cycle(client)
    assert writes == [50, 50], "one transaction per cycle, holding every endpoint polled"


async def test_a_restart_continues_the_alerts_and_status_since(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    path = tmp_path / "state.db"
    simulator, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(REJECTED, status="REJECTED"),
                simulated(FIXED, status="REJECTED"),
                simulated(HEALTHY, status="AVAILABLE"),
            ]
        )
    )
    settings = settings_for(url, endpoints=[REJECTED, FIXED, HEALTHY])
    clock = FakeClock(1000.0)
    with capture_logs() as before, opened(path) as store:
        async with monitoring(settings, clock=clock, store=store) as (monitor, client):
            await monitor.run_cycle(client)
    assert alerts_in(before) == [
        ("rejected", "rejected", "firing"),
        ("fixed-while-down", "rejected", "firing"),
    ]

    simulator.set_endpoint(**ids_of(FIXED), status="AVAILABLE")  # while nobody watches
    clock.now = 2000.0
    with capture_logs() as after, opened(path) as store:
        async with monitoring(settings, clock=clock, store=store) as (monitor, client):
            await monitor.run_cycle(client)
            await monitor.run_cycle(client)
            states = {
                entry["name"]: monitor.state_of(endpoint(entry)) for entry in (REJECTED, FIXED)
            }
            since = monitor.metrics.registry.get_sample_value(
                "atlas_interface_endpoint_status_since_timestamp_seconds",
                {"interface_endpoint_id": REJECTED["interface_endpoint_id"], **ids_of(REJECTED)},
            )
            assert monitor.metrics.registry.get_sample_value("atlas_monitor_state_store_up") == 1
    assert alerts_in(after) == [("fixed-while-down", "rejected", "resolved")]
    assert states["rejected"] is not None
    assert states["rejected"].status_since == 1000.0
    assert since == 1000.0
    assert states["fixed-while-down"] is not None
    assert states["fixed-while-down"].status_since == 2000.0


async def test_max_attempts_counts_the_posts_of_every_process(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    missing = endpoint_entry(interface_endpoint_id=endpoint_id(4), name="missing")
    refused = Fault(methods=["POST"], status=400, error_code="INVALID_ATTRIBUTE")
    simulator, url = await start_simulator(
        Scenario(endpoints=[simulated(missing, exists=False, faults=[refused])])
    )
    settings = settings_for(
        url, endpoints=[missing], add_missing={"enabled": True, "max_attempts": 3}
    )
    with capture_logs() as logs:
        for _ in range(5):  # five processes, two cycles each
            with opened(tmp_path / "state.db") as store:
                async with monitoring(settings, store=store) as (monitor, client):
                    await monitor.run_cycle(client)
                    await monitor.run_cycle(client)
    assert simulator.stats.requests[("POST", 400)] == 3
    assert [line["attempt"] for line in events_in(logs, "endpoint_add_failed")] == [1, 2, 3]
    assert alerts_in(logs) == [("missing", "not_found", "firing")]


async def test_an_attempt_is_saved_before_its_post_is_sent(
    tmp_path: Path, start_simulator: StartSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ordering a crash loop relies on: when the POST reaches Atlas, the file already
    counts it (what a kill -9 at that moment would leave behind)."""
    missing = endpoint_entry(interface_endpoint_id=endpoint_id(4), name="missing")
    path = tmp_path / "state.db"
    seen_in_file: list[int] = []

    def attempts_in_file() -> int:
        with contextlib.closing(sqlite3.connect(path)) as reader:
            row = reader.execute("SELECT add_attempts FROM endpoints").fetchone()
        return int(row[0]) if row else 0

    _, url = await start_simulator(Scenario(endpoints=[simulated(missing, exists=False)]))
    settings = settings_for(url, endpoints=[missing], add_missing={"enabled": True})
    with opened(path) as store:
        async with monitoring(settings, store=store) as (monitor, client):
            post = client.add_interface_endpoint

            async def post_watching_the_file(ref: EndpointRef) -> InterfaceEndpoint:
                seen_in_file.append(attempts_in_file())
                return await post(ref)

            monkeypatch.setattr(client, "add_interface_endpoint", post_watching_the_file)
            await monitor.run_cycle(client)
    assert seen_in_file == [1]


async def test_endpoints_that_left_the_config_are_dropped_and_their_alerts_resolved(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    path = tmp_path / "state.db"
    _, url = await start_simulator(
        Scenario(
            endpoints=[
                simulated(REJECTED, status="REJECTED"),
                simulated(HEALTHY, status="AVAILABLE"),
            ]
        )
    )
    with opened(path) as store:
        async with monitoring(settings_for(url, endpoints=[REJECTED, HEALTHY]), store=store) as (
            monitor,
            client,
        ):
            await monitor.run_cycle(client)
    with capture_logs() as logs, opened(path) as store:
        async with monitoring(settings_for(url, endpoints=[HEALTHY]), store=store) as (
            monitor,
            client,
        ):
            await monitor.run_cycle(client)
    assert alerts_in(logs) == [("rejected", "rejected", "resolved")]
    (removed,) = events_in(logs, "endpoint_removed")
    assert removed["reason"] == "left the config while the monitor was stopped"
    with opened(path) as store:
        assert set(store.saved.endpoints) == {endpoint(HEALTHY).ref}


async def test_discovered_endpoints_wait_in_the_file_for_the_first_listing(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    """Before a restart's first discovery nobody knows whether a saved discovered endpoint
    is still there: it is neither resumed nor resolved until the listing says."""
    path = tmp_path / "state.db"
    kept, gone = endpoint_id(1), endpoint_id(2)
    simulator, url = await start_simulator(
        Scenario(
            endpoint_services=[ScenarioService(group_id=GROUP_ID, id=AWS_SERVICE)],
            endpoints=[
                at_atlas(CloudProvider.AWS, AWS_SERVICE, kept, status="REJECTED"),
                at_atlas(CloudProvider.AWS, AWS_SERVICE, gone, status="REJECTED"),
            ],
        )
    )
    settings = v2_settings(url, endpoints=[], discover=[{"group_id": GROUP_ID}])
    with capture_logs() as before, opened(path) as store:
        async with monitoring(settings, store=store) as (monitor, client):
            await monitor.run_cycle(client)
    assert [alert for _, alert, _ in alerts_in(before)] == ["rejected", "rejected"]

    simulator.remove_endpoint(GROUP_ID, AWS_SERVICE, gone)
    with capture_logs() as after, opened(path) as store:
        async with monitoring(settings, store=store) as (monitor, client):
            assert events_in(after, "alert") == [], "nothing is resolved before the listing"
            await monitor.run_cycle(client)
    (resolved,) = events_in(after, "alert")
    assert (resolved["interface_endpoint_id"], resolved["state"]) == (gone, "resolved")
    (removed,) = events_in(after, "endpoint_removed")
    assert removed["reason"] == "no longer listed by its endpoint service"
    with opened(path) as store:
        assert [ref.interface_endpoint_id for ref in store.saved.endpoints] == [kept]


async def test_with_an_unusable_file_the_monitor_runs_in_memory_and_says_so(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"\x00junk" * 1000)
    _, url = await start_simulator(Scenario(endpoints=[simulated(REJECTED, status="REJECTED")]))
    with capture_logs() as logs, opened(path) as store:
        async with monitoring(settings_for(url, endpoints=[REJECTED]), store=store) as (
            monitor,
            client,
        ):
            await monitor.run_cycle(client)
            up = monitor.metrics.registry.get_sample_value("atlas_monitor_state_store_up")
    assert up == 0
    assert alerts_in(logs) == [("rejected", "rejected", "firing")]
    assert len(events_in(logs, "state_store_unavailable")) == 1


# --- real processes ------------------------------------------------------------------------

SimulatorProcess = Callable[..., tuple[Process, str]]
LATENCY_SECONDS = 0.05
"""Every GET takes this long, so a cycle lasts long enough for a kill to land inside it."""
FLEET = [REJECTED, FIXED, HEALTHY] + [
    endpoint_entry(interface_endpoint_id=endpoint_id(n), name=f"filler-{n}") for n in range(4, 9)
]


def alert_lines(lines: list[str]) -> list[tuple[str, str, str]]:
    return alerts_in(json.loads(line) for line in lines if json_event(line) == "alert")


def serve_scenario(
    directory: Path, simulator_process: SimulatorProcess, endpoints: list[dict[str, Any]]
) -> str:
    """A simulator child serving ``endpoints`` (scenario entries); returns its URL."""
    scenario = directory / "scenario.json"
    scenario.write_text(json.dumps({"endpoints": endpoints}), encoding="utf-8")
    _, url = simulator_process("--scenario", str(scenario))
    return url


def slow(seconds: float) -> list[dict[str, Any]]:
    return [{"latency_seconds": seconds, "methods": ["GET"]}]


@pytest.fixture
def fleet_simulator(tmp_path: Path, simulator_process: SimulatorProcess) -> str:
    """REJECTED and FIXED rejected, the rest AVAILABLE, every GET slow."""
    statuses = {REJECTED["name"]: "REJECTED", FIXED["name"]: "REJECTED"}
    return serve_scenario(
        tmp_path,
        simulator_process,
        [
            {
                **ids_of(entry),
                "status": statuses.get(entry["name"], "AVAILABLE"),
                "faults": slow(LATENCY_SECONDS),
            }
            for entry in FLEET
        ],
    )


def set_status(simulator_url: str, entry: Mapping[str, Any], status: str) -> None:
    """The simulator's control route: ``entry`` answers ``status`` from now on."""
    path = "/".join(ids_of(entry).values())
    request = urllib.request.Request(  # noqa: S310 (127.0.0.1, see the fixture)
        f"{simulator_url}/_simulator/endpoints/{path}",
        data=json.dumps({"status": status}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 204


class Daemons:
    """`run` children sharing one config (and so one state file), each on its own port."""

    def __init__(
        self,
        directory: Path,
        simulator_url: str,
        endpoints: list[dict[str, Any]] = FLEET,
        **state: Any,
    ) -> None:
        self.directory = directory
        self.endpoints = endpoints
        self.state_path = directory / "state.db"
        self.simulator_url = simulator_url
        self.state = {"path": str(self.state_path), "lock_wait_seconds": 1, **state}
        self.started: list[Process] = []

    def start(self, program: tuple[str, ...] | None = None) -> Process:
        document = config_document(
            atlas={"base_url": self.simulator_url, "max_retries": 0},
            poll={"interval_seconds": 0.3, "concurrency": 2, "max_requests_per_minute": None},
            server={"host": "127.0.0.1", "port": unused_port()},
            log={"level": "info", "format": "json"},
            endpoints=self.endpoints,
            state=self.state,
        )
        config = self.directory / f"config-{len(self.started)}.json"
        config.write_text(json.dumps(document), encoding="utf-8")
        config.chmod(0o644)
        args = ["run", "--config", str(config)]
        env = subprocess_env(**WARNINGS_ENV)
        child = Process(args, env) if program is None else Process(args, env, program)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.started:
            child.kill()


@pytest.fixture
def daemons(tmp_path: Path, fleet_simulator: str) -> Iterator[Daemons]:
    running = Daemons(tmp_path, fleet_simulator)
    yield running
    running.stop_all()


def status_since_in_file(path: Path, entry: Mapping[str, Any]) -> float:
    with contextlib.closing(sqlite3.connect(path)) as reader:
        (since,) = reader.execute(
            "SELECT status_since FROM endpoints WHERE interface_endpoint_id = ?",
            (entry["interface_endpoint_id"],),
        ).fetchone()
    return float(since)


KILL_ROUNDS = 12


def test_kill_9_at_random_moments_never_repeats_a_firing_line_and_resolves_once(
    daemons: Daemons,
) -> None:
    """Round 0 fires both rejected endpoints and completes a cycle. Then, KILL_ROUNDS times,
    a daemon starts on the same file and is killed with SIGKILL at a random moment (seeded,
    anywhere from its start to well into its second cycle); halfway, FIXED is made AVAILABLE
    while no daemon runs. Over all those lives: no firing line, one resolved line for FIXED,
    and REJECTED's status_since as round 0 saved it.

    (A kill between writing an alert line and committing it, a window of about a
    millisecond, would repeat that line: the documented choice of a repeat over a loss.)
    """
    rng = random.Random(14)
    first = daemons.start()
    first.wait_for_line(is_event("poll_cycle_finished"))
    before = alert_lines(first.seen)
    first.kill()
    assert before == [
        ("rejected", "rejected", "firing"),
        ("fixed-while-down", "rejected", "firing"),
    ]
    since = status_since_in_file(daemons.state_path, REJECTED)

    after: list[tuple[str, str, str]] = []
    for round_number in range(KILL_ROUNDS):
        if round_number == KILL_ROUNDS // 2:
            set_status(daemons.simulator_url, FIXED, "AVAILABLE")
        child = daemons.start()
        child.wait_for_line(is_event("monitor_started"))
        # The kill lands anywhere in the first two cycles (each about 0.2 s of slow GETs,
        # 0.3 s apart): the injected fault, not a wait for something to happen.
        time.sleep(rng.uniform(0, 0.6))
        child.kill()
        lines = child.all_output()
        assert not any("Traceback" in line for line in lines), lines
        after += alert_lines(lines)

    last = daemons.start()  # a last life, long enough to see FIXED resolved if nobody did
    last.wait_for_line(is_event("poll_cycle_finished"))
    url = json.loads(next(line for line in last.seen if json_event(line) == "monitor_started"))[
        "url"
    ]
    _, _, metrics = http_get(f"{url}/metrics")
    assert last.stop() == 0
    after += alert_lines(last.all_output())

    assert after == [("fixed-while-down", "rejected", "resolved")]
    assert status_since_in_file(daemons.state_path, REJECTED) == since
    expected = f'interface_endpoint_id="{REJECTED["interface_endpoint_id"]}"'
    (since_line,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("atlas_interface_endpoint_status_since_timestamp_seconds{")
        and expected in line
    ]
    assert float(since_line.rsplit(" ", 1)[1]) == since
    assert "atlas_monitor_state_store_up 1.0" in metrics


def firing_in_file(path: Path, entry: Mapping[str, Any]) -> dict[str, float]:
    """What the file says is firing for ``entry`` (read beside the writer, as WAL allows)."""
    with contextlib.closing(sqlite3.connect(path)) as reader:
        row = reader.execute(
            "SELECT firing FROM endpoints WHERE interface_endpoint_id = ?",
            (entry["interface_endpoint_id"],),
        ).fetchone()
    return {} if row is None else dict(json.loads(row[0]))


def test_an_alert_line_is_saved_at_once_not_at_the_end_of_its_cycle(
    tmp_path: Path, simulator_process: SimulatorProcess
) -> None:
    """The worst moment for a kill -9: just after a firing line, with the cycle far from
    over (the next endpoint takes 3 s). The file has the alert before the kill, so the next
    process stays quiet."""
    laggard = endpoint_entry(interface_endpoint_id=endpoint_id(9), name="laggard")
    url = serve_scenario(
        tmp_path,
        simulator_process,
        [
            {**ids_of(REJECTED), "status": "REJECTED"},
            {**ids_of(laggard), "status": "AVAILABLE", "faults": slow(3)},
        ],
    )
    daemons = Daemons(tmp_path, url, endpoints=[REJECTED, laggard])
    cycle_ended = is_event("poll_cycle_finished", "poll_cycle_overran")  # it outlasts 0.3 s
    try:
        first = daemons.start()
        first.wait_for_line(lambda line: alert_lines([line]) != [])
        deadline = time.monotonic() + 2
        while "rejected" not in firing_in_file(daemons.state_path, REJECTED):
            assert time.monotonic() < deadline, "the firing alert never reached the file"
            time.sleep(0.01)
        first.kill()
        lines = first.all_output()
        assert alert_lines(lines) == [("rejected", "rejected", "firing")]
        assert not any(cycle_ended(line) for line in lines)

        second = daemons.start()
        second.wait_for_line(cycle_ended)
        assert second.stop() == 0
        assert alert_lines(second.all_output()) == []
    finally:
        daemons.stop_all()


def test_a_sigterm_restart_emits_no_alert_line_and_keeps_status_since(daemons: Daemons) -> None:
    first = daemons.start()
    first.wait_for_line(is_event("poll_cycle_finished"))
    assert first.stop() == 0
    assert len(alert_lines(first.all_output())) == 2
    since = status_since_in_file(daemons.state_path, REJECTED)

    second = daemons.start()
    second.wait_for_line(is_event("state_store_opened"))
    second.wait_for_line(is_event("poll_cycle_finished"))
    second.wait_for_line(is_event("poll_cycle_finished"))
    assert second.stop() == 0
    lines = second.all_output()
    assert_clean_shutdown(lines, "SIGTERM")
    opened_line = json.loads(
        next(line for line in lines if json_event(line) == "state_store_opened")
    )
    assert opened_line["endpoints"] == len(FLEET)
    assert alert_lines(lines) == []
    assert status_since_in_file(daemons.state_path, REJECTED) == since


def test_a_second_process_on_the_same_file_exits_2_and_the_first_goes_on(
    daemons: Daemons,
) -> None:
    first = daemons.start()
    first.wait_for_line(is_event("poll_cycle_finished"))
    started_waiting = time.monotonic()
    second = daemons.start()
    assert second.popen.wait(timeout=20) == 2
    waited = time.monotonic() - started_waiting
    output = "\n".join(second.all_output())
    assert f"state file {daemons.state_path} is in use by another atlas-endpoint-monitor" in output
    assert waited >= 1, "it waited lock_wait_seconds for the other process to go"
    assert not any(is_event("monitor_started")(line) for line in second.seen)

    cycles = sum(is_event("poll_cycle_finished")(line) for line in first.seen)
    first.wait_for_line(is_event("poll_cycle_finished"))  # still polling, still saving
    assert first.stop() == 0
    assert cycles >= 1
    with opened(daemons.state_path) as store:
        assert store.up
        assert len(store.saved.endpoints) == len(FLEET)


def test_a_rolling_restart_waits_for_the_old_process_and_takes_over_without_alerts(
    tmp_path: Path, fleet_simulator: str
) -> None:
    daemons = Daemons(tmp_path, fleet_simulator, lock_wait_seconds=15)
    try:
        old = daemons.start()
        old.wait_for_line(is_event("poll_cycle_finished"))
        new = daemons.start()
        new.wait_for_line(is_event("state_store_waiting_for_lock"))
        assert old.stop() == 0
        new.wait_for_line(is_event("poll_cycle_finished"))
        assert new.stop() == 0
        assert alert_lines(new.all_output()) == []
    finally:
        daemons.stop_all()


@pytest.mark.parametrize(
    ("unusable", "cause"),
    [
        ("read-only directory", "Permission denied"),
        ("read-only file", "attempt to write a readonly database"),
        ("unreadable file", "unable to open database file"),
    ],
)
def test_a_state_file_that_cannot_be_written_is_a_warning_at_start_and_the_daemon_runs_in_memory(
    fleet_simulator: str, unusable: str, cause: str
) -> None:
    """Found out when the daemon starts, not at its first save; the file is left as it was.
    Root may write anywhere, so as root the daemon runs as nobody (setpriv)."""
    program: tuple[str, ...] = (sys.executable, "-m", "monitor")
    if os.geteuid() == 0:
        program = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *program)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)
        state_dir = directory / "state"
        state_dir.mkdir()
        state_path = state_dir / "state.db"
        if unusable == "read-only directory":
            state_dir.chmod(0o555)
        else:
            StateStore.open(state_path, 1).close()  # a good file, then not writable
            state_dir.chmod(0o777)
            state_path.with_name("state.db.lock").chmod(0o666)
            state_path.chmod(0o444 if unusable == "read-only file" else 0o000)
        before = state_path.read_bytes() if state_path.exists() else None
        daemons = Daemons(directory, fleet_simulator)
        daemons.state_path = state_path
        daemons.state["path"] = str(state_path)
        try:
            child = daemons.start(program)
            warning = json.loads(child.wait_for_line(is_event("state_store_unavailable")))
            child.wait_for_line(is_event("poll_cycle_finished"))
            assert child.stop() == 0
        finally:
            daemons.stop_all()
        lines = child.all_output()
        after = state_path.read_bytes() if state_path.exists() else None
    assert warning["path"] == str(state_path)
    assert cause in warning["cause"]
    assert warning["level"] == "warning"
    assert not any(is_event("state_store_opened")(line) for line in lines)
    assert alert_lines(lines) == [
        ("rejected", "rejected", "firing"),
        ("fixed-while-down", "rejected", "firing"),
    ]
    assert after == before
