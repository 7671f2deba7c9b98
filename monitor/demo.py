"""The demo: the embedded simulator plus the daemon against it, on the packaged config."""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path

import yaml
from pydantic import SecretStr

from monitor.atlas import ApiKey
from monitor.config import BASE_URL_ENV, Credentials, Settings, parse_config
from monitor.lifecycle import serve_on_stack, serve_until_stopped
from monitor.server import start_daemon
from monitor.simulator import Simulator, default_scenario

# Known to everybody on purpose: they only open the local simulator.
DEMO_PUBLIC_KEY = "demo-public-key"
DEMO_PRIVATE_KEY = "demo-private-key"
DEMO_CONFIG = "demo-config.yaml"


def demo_settings(simulator_url: str, port: int | None = None) -> Settings:
    """The packaged demo config, pointed at wherever the simulator really listens."""
    source = resources.files("monitor") / "resources" / DEMO_CONFIG
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    if port is not None:
        raw["server"]["port"] = port
    config = parse_config(raw, {BASE_URL_ENV: simulator_url})
    credentials = Credentials(ApiKey(DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY)), "the demo")
    return Settings(config=config, credentials=credentials, source=Path(str(source)))


async def run_demo(simulator_host: str, simulator_port: int, port: int | None) -> int:
    """Simulator first (the daemon needs its address), then the daemon; Ctrl-C stops both."""

    async def start(services: contextlib.AsyncExitStack) -> None:
        simulator = Simulator(
            default_scenario(), public_key=DEMO_PUBLIC_KEY, private_key=DEMO_PRIVATE_KEY
        )
        simulator_url = await serve_on_stack(
            services, simulator.app, simulator_host, simulator_port
        )
        settings = demo_settings(simulator_url, port)
        api_url = simulator_url + settings.config.atlas.api_version.root
        daemon_url = await start_daemon(
            services, settings, load=lambda: demo_settings(simulator_url, port)
        )
        print(
            f"\nMetrics:             {daemon_url}/metrics\n"
            f"Health / readiness:  {daemon_url}/healthz  {daemon_url}/readyz\n"
            f"Simulated Atlas API: {api_url} (keys {DEMO_PUBLIC_KEY} / "
            f"{DEMO_PRIVATE_KEY})\n"
            f"Simulator stats:     {simulator_url}/_simulator/stats\n"
            "Alerts and events are the JSON lines below. Press Ctrl-C to stop.\n",
            flush=True,
        )

    return await serve_until_stopped(start)
