"""Issue 18: what a careless operator and a misbehaving Atlas can feed the daemon.

Each test reproduces one finding of the attack run (numbered as in the issue and in
docs/hostile-inputs.md): a config that is not what it seems, numbers that would stop polling,
credentials that would leak, answers that would break the exposition, the log or the table.
Whatever crosses a socket does so for real: a hand-written fake Atlas on 127.0.0.1 answers
exactly as badly as each test needs, which the simulator (an honest Atlas) never would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.testing import capture_logs

from monitor.atlas import (
    ApiKey,
    AtlasBadResponseError,
    AtlasClient,
    AtlasNotFoundError,
    AtlasRateLimitedError,
    EndpointRef,
    InterfaceEndpoint,
    parse_retry_after,
)
from monitor.atlas.http import MAX_THROTTLE_SECONDS
from monitor.atlas.pacing import MAX_RATE_LIMIT_SPACING_SECONDS
from monitor.cli import main
from monitor.config import (
    BASE_URL_ENV,
    MAX_CONFIG_BYTES,
    ConfigError,
    EndpointConfig,
    load_settings,
    parse_config,
)
from monitor.lifecycle import serve_on_stack
from monitor.logs import REDACTED, configure_logging, secret_forms
from monitor.polling.poller import PollResult, watched_endpoints
from monitor.providers import CloudProvider, ConnectionStatus
from monitor.report import render_json, render_table
from tests.helpers import (
    CREDENTIALS_ENV,
    ENDPOINT_ID,
    GROUP_ID,
    MONITOR_PROGRAM,
    PRIVATE_KEY,
    PRIVATE_LINK_ID,
    PUBLIC_KEY,
    Process,
    StartDaemon,
    WriteConfig,
    config_document,
    endpoint_entry,
    endpoint_id,
    events_in,
    is_event,
    run_daemon,
    settings_for,
    subprocess_env,
    unused_port,
)

WAIT_SECONDS = 10
"""Bound on every wait for the daemon; each needs a fraction of it."""
RELOAD_OK = "atlas_monitor_config_last_reload_successful"
# POST /-/reload is served only when enabled.
RELOADABLE = {"host": "127.0.0.1", "port": 0, "enable_reload": True}
V2_ROOT = "/api/atlas/v2"
SERVICE_PATH = f"{V2_ROOT}/groups/{GROUP_ID}/privateEndpoint/AWS/endpointService"
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
HUGE_INTEGER = b'{"error": 1' + b"0" * 5000 + b"}"

Routes = Mapping[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]]
FakeAtlas = Callable[[Routes], Awaitable[str]]


@pytest.fixture
async def fake_atlas() -> AsyncIterator[FakeAtlas]:
    """Serve hand-written answers on 127.0.0.1: {(method, path): handler} -> base URL.

    Ask for it before ``start_daemon``, so that daemons stop before their fake Atlas does.
    """
    async with contextlib.AsyncExitStack() as served:

        async def serve(routes: Routes) -> str:
            app = web.Application()
            for (method, path), handler in routes.items():
                app.router.add_route(method, path, handler)
            return await serve_on_stack(served, app, "127.0.0.1", 0)

        yield serve


def json_answer(document: object, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(document), content_type="application/json", headers=headers
    )


def raw_json_answer(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


def endpoint_document(endpoint: str = ENDPOINT_ID, **fields: Any) -> dict[str, Any]:
    return {
        "interfaceEndpointId": endpoint,
        "cloudProvider": "AWS",
        "connectionStatus": "AVAILABLE",
        "errorMessage": None,
        "deleteRequested": False,
        **fields,
    }


def service_document(service_id: str, endpoints: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "id": service_id,
        "cloudProvider": "AWS",
        "regionName": "US_EAST_1",
        "status": "AVAILABLE",
        "errorMessage": None,
        "interfaceEndpoints": endpoints,
        **fields,
    }


def v1_endpoint_path(endpoint: str = ENDPOINT_ID) -> str:
    return (
        f"/api/atlas/v1.0/groups/{GROUP_ID}/privateEndpoint/{PRIVATE_LINK_ID}"
        f"/interfaceEndpoints/{endpoint}"
    )


def client_for(base_url: str, **options: Any) -> AtlasClient:
    sleeps = options.pop("sleeps", None)

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    return AtlasClient(
        base_url=base_url,
        login=ApiKey(PUBLIC_KEY, SecretStr(PRIVATE_KEY)),
        timeout_seconds=5,
        max_retries=options.pop("max_retries", 0),
        **({"sleep": record} if sleeps is not None else {}),
        **options,
    )


REF = EndpointRef(GROUP_ID, PRIVATE_LINK_ID, ENDPOINT_ID)


async def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, await response.text()


def sample_value(text: str, name: str) -> float:
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    return value


def json_log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line as strict JSON: Infinity and NaN are refused as any strict parser would."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a log line")

    return [json.loads(line, parse_constant=refuse) for line in stream.getvalue().splitlines()]


def run_cli(*args: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess[str]:
    """The real program in a child process, so a read that blocks fails the test in time."""
    return subprocess.run(
        [*MONITOR_PROGRAM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
        check=False,
    )


def problems_of(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_load(text), environ or {})
    return raised.value.problems


# --- 4. numbers that stop polling -------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("poll: {interval_seconds: 1e15}", "poll.interval_seconds"),
        ("poll: {interval_seconds: .inf}", "poll.interval_seconds"),
        ("poll: {interval_seconds: .nan}", "poll.interval_seconds"),
        ("poll: {interval_seconds: 1.0e-9}", "poll.interval_seconds"),
        ("poll: {interval_seconds: 86401}", "poll.interval_seconds"),
        ("atlas: {timeout_seconds: .inf}", "atlas.timeout_seconds"),
        ("atlas: {timeout_seconds: 1.0e+308}", "atlas.timeout_seconds"),
        ("atlas: {timeout_seconds: 1.0e-300}", "atlas.timeout_seconds"),
        ("atlas: {max_retries: 11}", "atlas.max_retries"),
        ("poll: {concurrency: 1000000}", "poll.concurrency"),
        ("poll: {max_requests_per_minute: 1000000000}", "poll.max_requests_per_minute"),
        ("poll: {discover_every_cycles: 1000000000}", "poll.discover_every_cycles"),
        ("poll: {max_discovered_endpoints: 0}", "poll.max_discovered_endpoints"),
        ("alerts: {stuck_after_seconds: .inf}", "alerts.stuck_after_seconds"),
        ("alerts: {repeat_interval_seconds: 1e15}", "alerts.repeat_interval_seconds"),
        ("alerts: {repeat_interval_seconds: .nan}", "alerts.repeat_interval_seconds"),
        ("alerts: {unreachable_after_failures: 1000000000}", "alerts.unreachable_after_failures"),
        ("add_missing: {max_attempts: 1000}", "add_missing.max_attempts"),
    ],
)
def test_every_duration_and_count_has_finite_bounds_named_by_field(
    yaml_text: str, field: str
) -> None:
    document = {**yaml.safe_load(yaml_text), "endpoints": [endpoint_entry()]}
    problems = problems_of(yaml.safe_dump(document))
    assert [problem for problem in problems if problem.startswith(f"{field}: ")], problems


async def test_a_reload_to_an_interval_that_would_stop_polling_is_refused_and_polling_goes_on(
    fake_atlas: FakeAtlas, start_daemon: StartDaemon, write_config: WriteConfig
) -> None:
    async def healthy(request: web.Request) -> web.Response:
        return json_answer(endpoint_document())

    atlas_url = await fake_atlas({("GET", v1_endpoint_path()): healthy})
    environ = {**CREDENTIALS_ENV, BASE_URL_ENV: atlas_url}
    fast = {"interval_seconds": 0.1, "max_requests_per_minute": None}
    path = write_config(config_document(poll=fast, atlas={"max_retries": 0}, server=RELOADABLE))
    daemon = await start_daemon(
        load_settings(path, environ), load=lambda: load_settings(path, environ)
    )
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), WAIT_SECONDS)

    too_long = config_document(poll={"interval_seconds": 1e15}, server=RELOADABLE)
    path.write_text(yaml.safe_dump(too_long))
    with capture_logs() as logs:
        status, text = await fetch(f"{daemon.url}/-/reload", "POST")
        cycles = daemon.monitor.cycles_completed
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(cycles + 2), WAIT_SECONDS)
        _, metrics = await fetch(f"{daemon.url}/metrics")
        path.write_text(yaml.safe_dump(config_document(poll=fast, server=RELOADABLE)))
        after = await fetch(f"{daemon.url}/-/reload", "POST")

    assert status == 500
    assert "poll.interval_seconds: Input should be less than or equal to 86400" in text
    assert events_in(logs, "config_reload_failed")
    assert sample_value(metrics, RELOAD_OK) == 0
    assert after == (200, "config reloaded\n")


# --- 5. one bad label value takes /metrics down ----------------------------------------


async def test_region_names_that_are_no_label_value_never_reach_the_exposition(
    fake_atlas: FakeAtlas, start_daemon: StartDaemon
) -> None:
    regions = {"\ud800": "aa" * 12, "x" * 900_000: "bb" * 12, "EU_WEST_1": "cc" * 12}
    endpoints = {
        service_id: endpoint_id(number) for number, service_id in enumerate(regions.values())
    }
    routes: dict[tuple[str, str], Any] = {}
    for region, service_id in regions.items():
        service = service_document(service_id, [endpoints[service_id]], regionName=region)
        endpoint = endpoint_document(endpoints[service_id])

        async def answer_service(request: web.Request, document: Any = service) -> web.Response:
            return json_answer(document)

        async def answer_endpoint(request: web.Request, document: Any = endpoint) -> web.Response:
            return json_answer(document)

        routes[("GET", f"{SERVICE_PATH}/{service_id}")] = answer_service
        routes[("GET", f"{SERVICE_PATH}/{service_id}/endpoint/{endpoints[service_id]}")] = (
            answer_endpoint
        )
    atlas_url = await fake_atlas(routes)
    entries = [
        endpoint_entry(private_link_id=service_id, interface_endpoint_id=endpoint)
        for service_id, endpoint in endpoints.items()
    ]
    settings = settings_for(
        atlas_url, atlas={"api_version": "v2", "max_retries": 0}, endpoints=entries
    )

    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), WAIT_SECONDS)
        status, text = await fetch(f"{daemon.url}/metrics")

    assert status == 200
    shown = {
        sample.labels["private_link_id"]: sample.labels["region"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "atlas_endpoint_service_info"
    }
    assert shown == {"aa" * 12: "", "bb" * 12: "", "cc" * 12: "EU_WEST_1"}
    unusable = events_in(logs, "endpoint_service_region_unusable")
    assert sorted(line["region_length"] for line in unusable) == [1, 900_000]
    assert len(text) < 100_000


# --- 6. rate-limit headers that freeze a project ---------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("inf", MAX_THROTTLE_SECONDS),
        ("1e999", MAX_THROTTLE_SECONDS),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_THROTTLE_SECONDS),
        ("86400", MAX_THROTTLE_SECONDS),
        ("nan", None),
        ("12", 12.0),
    ],
)
def test_retry_after_is_finite_and_capped(header: str, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


async def test_rate_limit_headers_space_requests_at_most_a_minute_apart(
    fake_atlas: FakeAtlas,
) -> None:
    async def nearly_empty_bucket(request: web.Request) -> web.Response:
        headers = {"RateLimit-Limit": "0.0001", "RateLimit-Remaining": "0"}
        return json_answer(endpoint_document(), **headers)

    atlas_url = await fake_atlas({("GET", v1_endpoint_path()): nearly_empty_bucket})
    sleeps: list[float] = []
    stream = io.StringIO()
    configure_logging(stream=stream)
    async with client_for(atlas_url, sleeps=sleeps) as client:
        for _ in range(3):
            await client.get_interface_endpoint(REF)

    assert sleeps
    assert max(sleeps) <= MAX_RATE_LIMIT_SPACING_SECONDS
    (slowing,) = [
        line for line in json_log_lines(stream) if line["event"] == "atlas_project_slowing_down"
    ]
    assert slowing["spacing_seconds"] == MAX_RATE_LIMIT_SPACING_SECONDS


@pytest.mark.parametrize("retry_after", ["inf", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_retry_after_of_forever_pauses_the_project_for_the_cap_only(
    fake_atlas: FakeAtlas, retry_after: str
) -> None:
    async def throttled(request: web.Request) -> web.Response:
        body = {"error": 429, "errorCode": "RATE_LIMITED"}
        return json_answer(body, status=429, **{"Retry-After": retry_after})

    atlas_url = await fake_atlas({("GET", v1_endpoint_path()): throttled})
    stream = io.StringIO()
    configure_logging(stream=stream)
    async with client_for(atlas_url) as client:
        with pytest.raises(AtlasRateLimitedError) as raised:
            await client.get_interface_endpoint(REF)

    assert raised.value.retry_after == MAX_THROTTLE_SECONDS
    (paused,) = [
        line for line in json_log_lines(stream) if line["event"] == "atlas_project_throttled"
    ]
    assert paused["pause_seconds"] == MAX_THROTTLE_SECONDS


def test_json_log_lines_stay_strict_json_whatever_number_they_carry() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger("test").warning(
        "odd_numbers", top=float("inf"), nested={"deeper": [float("-inf"), float("nan")]}
    )

    (line,) = json_log_lines(stream)
    assert (line["top"], line["nested"]) == ("inf", {"deeper": ["-inf", "nan"]})


# --- 7. secrets in encoded forms ------------------------------------------------------

CLIENT_ID = "mdb_sa_id_0123456789abcdef01234567"
CLIENT_SECRET = "mdb_sa_sk_s3cr3t+/=&value"
ISSUED_TOKEN = "eyJhbGciOiJIUzI1NiJ9.issued-token.signature"


def test_the_masker_knows_the_basic_forms_of_a_secret() -> None:
    forms = secret_forms(CLIENT_ID, CLIENT_SECRET)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    stream = io.StringIO()
    configure_logging(stream=stream, secrets=forms)
    structlog.get_logger("test").error("echoed", detail=f"Authorization: Basic {basic}")

    (line,) = json_log_lines(stream)
    assert basic not in line["detail"]
    assert line["detail"].endswith("**********")
    assert "mdb_sa_sk_s3cr3t%2B%2F%3D%26value" in forms  # its form-encoded form too


async def test_once_never_shows_the_secret_its_basic_form_or_a_token_that_atlas_echoes(
    fake_atlas: FakeAtlas,
    capsys: pytest.CaptureFixture[str],
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy echoes the Authorization header of the login and of the API request, and
    the private part in an errorMessage: not one of them reaches stdout or stderr."""
    logins = 0

    async def token(request: web.Request) -> web.Response:
        nonlocal logins
        logins += 1
        if logins % 2 == 1:
            echoed = {
                "error": "invalid_client",
                "error_description": request.headers["Authorization"],
            }
            return json_answer(echoed, status=503)
        return json_answer(
            {"access_token": ISSUED_TOKEN, "token_type": "Bearer", "expires_in": 3600}
        )

    async def endpoint(request: web.Request) -> web.Response:
        echoed = f"{request.headers['Authorization']} / {CLIENT_SECRET}"
        return json_answer(endpoint_document(connectionStatus="REJECTED", errorMessage=echoed))

    path = f"{V2_ROOT}/groups/{GROUP_ID}/privateEndpoint/AWS/endpointService/{PRIVATE_LINK_ID}"
    atlas_url = await fake_atlas(
        {
            ("POST", "/api/oauth/token"): token,
            ("GET", f"{path}/endpoint/{ENDPOINT_ID}"): endpoint,
        }
    )
    for name in ("MONGODB_ATLAS_PUBLIC_API_KEY", "MONGODB_ATLAS_PRIVATE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv(BASE_URL_ENV, atlas_url)
    config = write_config(config_document(atlas={"api_version": "v2", "max_retries": 1}))

    for output in ("json", "table"):
        exit_code = await asyncio.to_thread(
            main, ["once", "--config", str(config), "--output", output]
        )
        out, err = capsys.readouterr()
        assert exit_code == 1
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        for secret in (CLIENT_SECRET, basic, ISSUED_TOKEN):
            assert secret not in out + err, (output, secret)
        assert "Bearer **********" in out  # the echo is there, masked
        assert "service account login failed: Basic **********" in err


async def test_a_secret_atlas_echoes_reaches_neither_metrics_nor_alerts_nor_the_state_file(
    fake_atlas: FakeAtlas, children: Callable[..., Process], tmp_path: Path
) -> None:
    """Atlas' free text becomes a label (errorMessage, for the alert annotation) and is kept
    in the state file (errorMessage, the last failure, a status it made up): each with
    every known secret masked, as in the log."""
    forms = secret_forms(PUBLIC_KEY, PRIVATE_KEY)
    echo = " / ".join(forms)
    failing, odd = endpoint_id(2), endpoint_id(3)

    async def rejected(request: web.Request) -> web.Response:
        return json_answer(endpoint_document(connectionStatus="REJECTED", errorMessage=echo))

    async def failed(request: web.Request) -> web.Response:
        return json_answer({"error": 500, "errorCode": "UNEXPECTED", "detail": echo}, 500)

    async def made_up_status(request: web.Request) -> web.Response:
        return json_answer(endpoint_document(odd, connectionStatus=f"ODD {echo}"))

    atlas_url = await fake_atlas(
        {
            ("GET", v1_endpoint_path()): rejected,
            ("GET", v1_endpoint_path(failing)): failed,
            ("GET", v1_endpoint_path(odd)): made_up_status,
        }
    )
    state = tmp_path / "state.db"
    daemon, url = await asyncio.to_thread(
        run_daemon,
        tmp_path,
        children,
        atlas_url,
        endpoints=[
            endpoint_entry(),
            endpoint_entry(interface_endpoint_id=failing),
            endpoint_entry(interface_endpoint_id=odd),
        ],
        atlas={"max_retries": 0},
        poll={"interval_seconds": 0.2, "max_requests_per_minute": None},
        state={"path": str(state)},
    )
    # A finished cycle has polled all three and saved what it saw.
    await asyncio.to_thread(daemon.wait_for_line, is_event("poll_cycle_finished"), WAIT_SECONDS)
    _, metrics = await fetch(f"{url}/metrics")
    assert await asyncio.to_thread(daemon.stop) == 0
    kept = await asyncio.to_thread(
        lambda: b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))
    )
    output = "\n".join(daemon.all_output())

    assert f'error_message="{REDACTED} / {REDACTED}' in metrics
    assert re.search(
        rf'atlas_interface_endpoint_status{{[^}}]*interface_endpoint_id="{odd}"[^}}]*'
        rf'status="UNKNOWN"}} 1',
        metrics,
    )
    assert b"UNEXPECTED" in kept
    assert f"ODD {REDACTED}".encode() in kept
    assert REDACTED.encode() in kept
    for form in forms:
        assert form not in metrics
        assert form.encode() not in kept
        assert form not in output


# --- 8. credentials over plain HTTP ----------------------------------------------------


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:9480", "http://localhost:9480", "http://[::1]:9480"]
)
def test_plain_http_to_loopback_needs_no_opt_in(base_url: str) -> None:
    config = parse_config(config_document(), {BASE_URL_ENV: base_url})
    assert not config.atlas.insecure


def test_plain_http_to_another_host_is_refused_unless_allowed_and_then_warned_about(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    refused = write_config(config_document(atlas={"base_url": "http://cloud.mongodb.com"}))
    assert main(["check", "--config", str(refused)]) == 2
    assert "atlas.base_url: plain http:// to cloud.mongodb.com" in capsys.readouterr().err

    allowed = write_config(
        config_document(atlas={"base_url": "http://simulator:9480", "allow_insecure_http": True})
    )
    assert main(["check", "--config", str(allowed)]) == 0
    assert "warning: atlas.base_url: plain http://" in capsys.readouterr().err


@pytest.mark.parametrize(
    "base_url",
    [
        "https://user:PASSWORD@cloud.mongodb.com",
        "http://user:PASSWORD@127.0.0.1:9",
        "ht:/u:PASSWORD@x",
    ],
)
def test_user_info_in_the_base_url_is_refused_without_being_shown(
    base_url: str,
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for source in ("file", "env"):
        if source == "env":
            monkeypatch.setenv(BASE_URL_ENV, base_url)
            path = write_config(config_document())
        else:
            path = write_config(config_document(atlas={"base_url": base_url}))
        assert main(["check", "--config", str(path)]) == 2
        out, err = capsys.readouterr()
        assert "atlas.base_url: must not hold user info" in err
        assert "PASSWORD" not in out + err


# --- 9. config files that are not what they seem ---------------------------------------


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [("latin-1", "not UTF-8 text (line 3 holds"), ("utf-16", "UTF-16 text (it starts with")],
)
def test_a_config_in_another_encoding_is_named_with_its_problem(
    encoding: str,
    reason: str,
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config()
    document = yaml.safe_dump(config_document())
    path.write_bytes(("# config\n\n# zürich office\n" + document).encode(encoding))

    assert main(["check", "--config", str(path)]) == 2
    assert f"--config: cannot read {path}: {reason}" in capsys.readouterr().err


def test_a_key_given_twice_in_an_endpoint_is_an_error_with_both_lines(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        "endpoints:\n"
        f"  - group_id: '{GROUP_ID}'\n"
        f"    private_link_id: '{PRIVATE_LINK_ID}'\n"
        f"    interface_endpoint_id: {ENDPOINT_ID}\n"
        "    name: orders\n"
        "    name: payments\n"
    )
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: line 6, column 5: duplicate key 'name': first at line 5, again at line 6" in err
    )


def test_duplicate_top_level_sections_are_errors_and_merge_keys_still_work(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    entry = f"{{group_id: '{GROUP_ID}', private_link_id: '{PRIVATE_LINK_ID}'"
    twice = write_config(
        f"endpoints:\n  - {entry}, interface_endpoint_id: {endpoint_id(1)}}}\n"
        f"poll: {{interval_seconds: 30}}\n"
        f"endpoints:\n  - {entry}, interface_endpoint_id: {endpoint_id(2)}}}\n"
    )
    assert main(["check", "--config", str(twice)]) == 2
    assert "duplicate key 'endpoints': first at line 1, again at line 4" in capsys.readouterr().err

    merged = write_config(
        f"endpoints:\n  - &first {entry}, interface_endpoint_id: {endpoint_id(1)}}}\n"
        f"  - <<: *first\n    interface_endpoint_id: {endpoint_id(2)}\n"
    )
    endpoints = load_settings(merged, CREDENTIALS_ENV).config.endpoints
    assert [endpoint.interface_endpoint_id for endpoint in endpoints] == [
        endpoint_id(1),
        endpoint_id(2),
    ]


def special_file(kind: str, tmp_path: Path) -> str:
    if kind == "fifo":
        fifo = tmp_path / "config.fifo"
        os.mkfifo(fifo)
        return str(fifo)
    if kind == "directory":
        return str(tmp_path)
    return "/dev/zero"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("fifo", "not a regular file but a FIFO (named pipe)"),
        ("device", "not a regular file but a character device"),
        ("directory", "not a regular file but a directory"),
    ],
)
@pytest.mark.parametrize("role", ["config", "private key file"])
def test_a_config_or_key_file_that_is_not_a_regular_file_is_refused_at_once(
    kind: str, reason: str, role: str, tmp_path: Path, write_config: WriteConfig
) -> None:
    path = special_file(kind, tmp_path)
    if role == "config":
        result = run_cli("check", "--config", path)
        expected = f"--config: cannot read {path}: {reason}"
    else:
        env = {"MONGODB_ATLAS_PRIVATE_API_KEY": "", "MONGODB_ATLAS_PRIVATE_API_KEY_FILE": path}
        result = run_cli("check", "--config", str(write_config()), **env)
        expected = f"env.MONGODB_ATLAS_PRIVATE_API_KEY_FILE: cannot read {path}: {reason}"
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_larger_than_the_cap_is_refused_unread(
    write_config: WriteConfig, credentials_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    with path.open("r+b") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)  # sparse: the test writes nothing

    assert main(["check", "--config", str(path)]) == 2
    assert f"cannot read {path}: larger than 10240 KiB" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["config", "web config"])
def test_a_config_nested_too_deeply_for_the_yaml_parser_is_named_not_a_traceback(
    which: str,
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    deep = "endpoints: " + "[" * 2000 + "]" * 2000 + "\n"
    if which == "config":
        path = write_config()
        path.write_text(deep, encoding="utf-8")
        named = path
    else:
        named = tmp_path / "web.yml"
        named.write_text(deep.replace("endpoints", "basic_auth_users"), encoding="utf-8")
        path = write_config(config_document(server={"web_config_file": str(named)}))

    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{named}: nested too deeply to read" in err
    assert "Traceback" not in err


def unblock_readers_of(fifo: Path, after: float) -> None:
    """A safety net for the test, not the daemon: should a regression read the FIFO, which
    blocks the event loop, open it for writing ``after`` seconds on, so that the reader sees
    the end of the file and the test fails in time instead of hanging."""

    def open_for_writing() -> None:
        with contextlib.suppress(OSError):  # ENXIO: nobody reads it, as it should be
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(after, open_for_writing)
    timer.daemon = True
    timer.start()


@pytest.mark.parametrize("bad", ["latin-1", "duplicate key", "fifo"])
async def test_a_reload_of_such_a_file_keeps_the_old_config_and_sets_the_failure_gauge(
    bad: str,
    fake_atlas: FakeAtlas,
    start_daemon: StartDaemon,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    async def healthy(request: web.Request) -> web.Response:
        return json_answer(endpoint_document())

    atlas_url = await fake_atlas({("GET", v1_endpoint_path()): healthy})
    environ = {**CREDENTIALS_ENV, BASE_URL_ENV: atlas_url}
    path = write_config(config_document(poll={"max_requests_per_minute": None}, server=RELOADABLE))
    daemon = await start_daemon(
        load_settings(path, environ), load=lambda: load_settings(path, environ)
    )
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), WAIT_SECONDS)

    if bad == "latin-1":
        path.write_bytes("# zürich\n".encode("latin-1") + path.read_bytes())
    elif bad == "duplicate key":
        path.write_text(path.read_text() + "poll: {concurrency: 2}\n")
    else:
        path.unlink()
        os.mkfifo(path)
        unblock_readers_of(path, after=WAIT_SECONDS)
    started = time.monotonic()
    with capture_logs() as logs:
        reload = fetch(f"{daemon.url}/-/reload", "POST")
        status, text = await asyncio.wait_for(reload, 2 * WAIT_SECONDS)
    _, metrics = await fetch(f"{daemon.url}/metrics")

    assert time.monotonic() - started < WAIT_SECONDS
    assert status == 500
    assert str(path) in text or "duplicate key" in text
    (failed,) = events_in(logs, "config_reload_failed")
    assert failed["problems"]
    assert sample_value(metrics, RELOAD_OK) == 0


# --- 10. deep JSON and huge integers from Atlas ----------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, DEEP_JSON), (200, HUGE_INTEGER), (404, DEEP_JSON), (404, HUGE_INTEGER)],
)
async def test_json_too_deep_or_too_long_for_python_is_a_bad_response_or_a_plain_error(
    status: int, body: bytes, fake_atlas: FakeAtlas
) -> None:
    async def hostile(request: web.Request) -> web.Response:
        return raw_json_answer(body, status)

    atlas_url = await fake_atlas({("GET", v1_endpoint_path()): hostile})
    expected = AtlasBadResponseError if status == 200 else AtlasNotFoundError
    async with client_for(atlas_url) as client:
        with pytest.raises(expected) as raised:
            await client.get_interface_endpoint(REF)
    assert len(str(raised.value)) < 1000


async def test_a_discovery_listing_too_deep_to_parse_is_a_failed_listing_not_a_failed_cycle(
    fake_atlas: FakeAtlas, start_daemon: StartDaemon
) -> None:
    async def hostile(request: web.Request) -> web.Response:
        return raw_json_answer(DEEP_JSON)

    atlas_url = await fake_atlas({("GET", SERVICE_PATH): hostile})
    settings = settings_for(
        atlas_url,
        atlas={"api_version": "v2", "max_retries": 0},
        endpoints=[],
        discover=[{"group_id": GROUP_ID, "cloud_providers": ["AWS"]}],
        poll={"interval_seconds": 0.1, "discover_every_cycles": 1},
    )
    with capture_logs() as logs:
        daemon = await start_daemon(settings)
        await asyncio.wait_for(daemon.monitor.wait_for_cycles(2), WAIT_SECONDS)

    failed = events_in(logs, "discovery_failed")
    assert len(failed) >= 2
    assert failed[0]["cause"] == "malformed JSON: nested too deeply"
    assert not events_in(logs, "poll_cycle_failed")


async def test_once_with_a_listing_too_deep_to_parse_reports_it_and_exits_1_without_a_traceback(
    fake_atlas: FakeAtlas,
    write_config: WriteConfig,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hostile(request: web.Request) -> web.Response:
        return raw_json_answer(DEEP_JSON)

    async def healthy(request: web.Request) -> web.Response:
        return json_answer(endpoint_document())

    atlas_url = await fake_atlas(
        {
            ("GET", SERVICE_PATH): hostile,
            ("GET", f"{SERVICE_PATH}/{PRIVATE_LINK_ID}/endpoint/{ENDPOINT_ID}"): healthy,
        }
    )
    monkeypatch.setenv(BASE_URL_ENV, atlas_url)
    path = write_config(
        config_document(
            atlas={"api_version": "v2", "max_retries": 0},
            discover=[{"group_id": GROUP_ID, "cloud_providers": ["AWS"]}],
        )
    )
    exit_code = await asyncio.to_thread(main, ["once", "--config", str(path), "--output", "json"])
    out, err = capsys.readouterr()

    assert exit_code == 1
    (record,) = json.loads(out)
    assert (record["up"], record["alerts"]) == (True, [])
    assert "discovery_failed" in err
    assert "Traceback" not in err


# --- 12. an API key with a colon -------------------------------------------------------


@pytest.mark.parametrize(
    "public_key", ["abcdefgh:PASTED-PRIVATE-KEY", "abcdefgh PASTED-PRIVATE-KEY", "abcd\nPASTED"]
)
@pytest.mark.parametrize("command", ["check", "once", "run"])
def test_a_public_key_holding_a_colon_or_space_is_refused_without_being_shown(
    public_key: str, command: str, write_config: WriteConfig
) -> None:
    # In a child process: should a regression let `run` start, the timeout ends it; and
    # Atlas is a closed port on 127.0.0.1, so nothing could ever leave the machine.
    result = run_cli(
        command,
        "--config",
        str(write_config()),
        MONGODB_ATLAS_PUBLIC_API_KEY=public_key,
        **{BASE_URL_ENV: f"http://127.0.0.1:{unused_port()}"},
    )
    out, err = result.stdout, result.stderr
    assert result.returncode == 2, err
    assert "env.MONGODB_ATLAS_PUBLIC_API_KEY: holds a ':', a space or a control character" in err
    assert "PASTED" not in out + err


def test_a_client_id_holding_a_colon_is_refused_the_same_way(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_ID", "mdb_sa_id_x:PASTED")
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_SECRET", "a-secret")
    assert main(["check", "--config", str(write_config())]) == 2
    out, err = capsys.readouterr()
    assert "env.MONGODB_ATLAS_CLIENT_ID: holds a ':'" in err
    assert "PASTED" not in out + err


# --- 14. a cap on discovery -------------------------------------------------------------


def test_discovery_watches_at_most_the_cap_and_says_how_many_it_dropped() -> None:
    configured = [EndpointConfig.model_validate(endpoint_entry())]
    listing = [
        EndpointConfig(
            group_id=GROUP_ID,
            private_link_id=PRIVATE_LINK_ID,
            interface_endpoint_id=endpoint_id(number),
        )
        for number in range(1, 13)
    ]
    discovered = {(GROUP_ID, CloudProvider.AWS): [*listing, configured[0]]}

    with capture_logs() as logs:
        watched = watched_endpoints(configured, discovered, max_discovered=5)

    assert watched == configured + listing[:5]
    (dropped,) = events_in(logs, "discovered_endpoints_dropped")
    assert (dropped["dropped"], dropped["watched"]) == (7, 5)
    assert parse_config(config_document(), {}).poll.max_discovered_endpoints == 5000


# --- 15. `once --output table` and terminal escapes ------------------------------------


def test_the_once_table_escapes_what_a_terminal_would_act_on() -> None:
    endpoint = EndpointConfig.model_validate(endpoint_entry(name="orders"))
    hostile = "line\nbreak\rreturn\x00nul\x1b[31mred\ud800"
    answer = InterfaceEndpoint(ENDPOINT_ID, ConnectionStatus.UNKNOWN, "NEW\x1b[2J", hostile, False)
    results = [PollResult(endpoint, answer, None)]

    table = render_table(results)
    _header, row = table.splitlines()
    assert row.endswith("line\\nbreak\\rreturn\\x00nul\\x1b[31mred\\ud800")
    assert "\\x1b[2J" in row
    assert all(char.isprintable() for char in row)
    table.encode("utf-8")  # a lone surrogate would raise here, as print() would
    json.loads(render_json(results))
