"""Command line: every command validates first and answers with the contract's exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TextIO

import structlog

from monitor import __version__
from monitor.atlas import API_ROOT
from monitor.config import (
    PRIVATE_KEY_ENV,
    PUBLIC_KEY_ENV,
    ConfigError,
    MonitorConfig,
    Settings,
    load_settings,
    resolve_config_path,
)
from monitor.lifecycle import serve_on_stack, serve_until_stopped
from monitor.logs import configure_logging
from monitor.polling.poller import poll_once
from monitor.polling.statestore import StateStore, StateStoreLocked
from monitor.report import has_alert, render_json, render_table
from monitor.server import start_daemon

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_ALERT = 1
EXIT_INVALID_CONFIG = 2
EXIT_INTERRUPTED = 130
SIMULATOR_PORT = 10480

SignalDisposition = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
"""What ``signal.signal`` returns: a handler, SIG_DFL or SIG_IGN, or None (not set from Python)."""


def main(argv: Sequence[str] | None = None, *, sighup_at_start: SignalDisposition = None) -> int:
    """``sighup_at_start``: SIGHUP's disposition before the entry point ignored it (see
    monitor.__main__); every command but ``run``, which reloads on SIGHUP, gets it back."""
    args = _parser().parse_args(argv)
    if sighup_at_start is not None and args.handler is not _run:
        signal.signal(signal.SIGHUP, sighup_at_start)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlas-endpoint-monitor",
        description="Watch MongoDB Atlas PrivateLink interface endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: poll, serve /metrics, log alerts")
    _add_config_argument(run)
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate the config and the presence of credentials")
    _add_config_argument(check)
    check.set_defaults(handler=_check)

    once = commands.add_parser("once", help="poll every endpoint once and print the result")
    _add_config_argument(once)
    once.add_argument("--output", choices=("table", "json"), default="table")
    once.set_defaults(handler=_once)

    simulate = commands.add_parser("simulate", help="serve a fake Atlas API for demos and tests")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=SIMULATOR_PORT)
    simulate.add_argument("--scenario", help="YAML/JSON scenario file (default: the demo one)")
    simulate.add_argument(
        "--public-key",
        help=f"API public key to accept (default: ${PUBLIC_KEY_ENV} or the demo key)",
    )
    simulate.add_argument(
        "--private-key",
        help=f"API private key to accept (default: ${PRIVATE_KEY_ENV} or the demo key)",
    )
    simulate.add_argument(
        "--client-id",
        help="service account client id whose OAuth logins to accept "
        "(default: $MONGODB_ATLAS_CLIENT_ID; none: service-account login is refused)",
    )
    simulate.add_argument(
        "--client-secret",
        help="service account client secret (default: $MONGODB_ATLAS_CLIENT_SECRET)",
    )
    simulate.set_defaults(handler=_simulate)

    demo = commands.add_parser("demo", help="run the simulator and the monitor against it")
    demo.add_argument("--simulator-host", default="127.0.0.1")
    demo.add_argument("--simulator-port", type=int, default=SIMULATOR_PORT)
    demo.add_argument(
        "--port", type=int, help="port of the daemon's /metrics (default: the demo config's)"
    )
    demo.set_defaults(handler=_demo)
    return parser


def _add_config_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config", help="YAML config file (default: $ATLAS_MONITOR_CONFIG)", metavar="PATH"
    )


def _load(args: argparse.Namespace) -> Settings | None:
    """Print every problem with its field path, or return the settings."""
    try:
        return load_settings(resolve_config_path(args.config, os.environ))
    except ConfigError as error:
        _print_problems("invalid configuration:", error.problems)
        return None


def _print_problems(title: str, problems: Sequence[str]) -> None:
    print(title, *(f"  {problem}" for problem in problems), sep="\n", file=sys.stderr)


def _log_as_configured(settings: Settings, stream: TextIO | None = None) -> None:
    """The config's level and format, with the private key masked wherever it might slip in;
    then the config's warnings, so they land in the same log."""
    configure_logging(
        settings.config.log.level,
        settings.config.log.format,
        stream=stream,
        secrets=settings.credentials.secret_forms,
    )
    for warning in settings.warnings:
        log.warning("config_warning", problem=warning)


def _run(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_INVALID_CONFIG
    _log_as_configured(settings)
    state = settings.config.state
    try:
        store = None if state.path is None else StateStore.open(state.path, state.lock_wait_seconds)
    except StateStoreLocked as error:
        print(error, file=sys.stderr, flush=True)
        return EXIT_INVALID_CONFIG

    async def start(services: contextlib.AsyncExitStack) -> None:
        await start_daemon(services, settings, store=store)

    try:
        return asyncio.run(serve_until_stopped(start))
    finally:
        if store is not None:
            store.close()


def _check(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_INVALID_CONFIG
    config = settings.config
    print(
        f"{settings.source}: valid\n"
        f"  endpoints:    {len(config.endpoints)}{_discovery_summary(config)}\n"
        f"  atlas:        {config.atlas.base_url} (API {config.atlas.api_version})\n"
        f"  poll:         every {config.poll.interval_seconds:g} s, "
        f"{config.poll.concurrency} at a time\n"
        f"  server:       {config.server.host}:{config.server.port}\n"
        f"  listener:     {settings.listener.describe()}\n"
        f"  /-/reload:    {'on' if config.server.enable_reload else 'off (server.enable_reload)'}\n"
        f"  state:        {config.state.path or 'in memory (state.path not set)'}\n"
        f"  credentials:  {settings.credentials.describe()}"
    )
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _discovery_summary(config: MonitorConfig) -> str:
    if not config.discover:
        return ""
    projects = len({entry.group_id for entry in config.discover})
    return (
        f", plus those discovered in {projects} project(s) every "
        f"{config.poll.discover_every_cycles} cycles"
    )


def _once(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_INVALID_CONFIG
    # stdout carries the result, so the logs (retries, failures) go to stderr.
    _log_as_configured(settings, stream=sys.stderr)
    checked = asyncio.run(poll_once(settings))
    results = checked.results
    print(render_json(results) if args.output == "json" else render_table(results))
    # A failed discovery listing (logged) left endpoints unchecked: no all-clear.
    return EXIT_ALERT if has_alert(results) or checked.failed_listings else EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    # Imported here, as in _demo, so that ``run`` never loads the simulator.
    from monitor.demo import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
    from monitor.simulator import ScenarioError, Simulator, default_scenario, load_scenario

    try:
        scenario = load_scenario(args.scenario) if args.scenario else default_scenario()
    except ScenarioError as error:
        _print_problems("invalid scenario:", error.problems)
        return EXIT_INVALID_CONFIG
    public_key = args.public_key or os.environ.get(PUBLIC_KEY_ENV) or DEMO_PUBLIC_KEY
    private_key = args.private_key or os.environ.get(PRIVATE_KEY_ENV) or DEMO_PRIVATE_KEY
    client_id = args.client_id or os.environ.get("MONGODB_ATLAS_CLIENT_ID") or None
    client_secret = args.client_secret or os.environ.get("MONGODB_ATLAS_CLIENT_SECRET") or None
    if (client_id is None) != (client_secret is None):
        _print_problems(
            "invalid service account:",
            ["--client-id and --client-secret (or their env variables) go together"],
        )
        return EXIT_INVALID_CONFIG
    configure_logging(secrets=[private_key, *([client_secret] if client_secret else [])])
    simulator = Simulator(
        scenario,
        public_key=public_key,
        private_key=private_key,
        client_id=client_id,
        client_secret=client_secret,
    )

    async def start(services: contextlib.AsyncExitStack) -> None:
        url = await serve_on_stack(services, simulator.app, args.host, args.port)
        # The client id is no secret; the secret is never logged (and masked if it were).
        log.info(
            "simulator_started",
            url=url,
            api_root=API_ROOT,
            service_account=client_id,
        )

    return asyncio.run(serve_until_stopped(start))


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import DEMO_PRIVATE_KEY, run_demo

    configure_logging(secrets=[DEMO_PRIVATE_KEY])
    return asyncio.run(run_demo(args.simulator_host, args.simulator_port, args.port))
