"""The demo: the embedded simulator plus the monitor against it, on the packaged config."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import SecretStr

from monitor.atlas import API_ROOT
from monitor.config import BASE_URL_ENV, Credentials, Settings, parse_config
from monitor.lifecycle import serve_simulator_until_stopped
from monitor.poller import poll_once
from monitor.report import render_table
from monitor.simulator import Simulator, default_scenario

# Known to everybody on purpose: they only open the local simulator.
DEMO_PUBLIC_KEY = "demo-public-key"
DEMO_PRIVATE_KEY = "demo-private-key"
DEMO_CONFIG = "demo-config.yaml"


def demo_settings(simulator_url: str) -> Settings:
    """The packaged demo config, pointed at wherever the simulator really listens."""
    source = resources.files("monitor") / "resources" / DEMO_CONFIG
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    config = parse_config(raw, {BASE_URL_ENV: simulator_url})
    credentials = Credentials(DEMO_PUBLIC_KEY, SecretStr(DEMO_PRIVATE_KEY), "the demo")
    return Settings(config=config, credentials=credentials, source=Path(str(source)))


async def run_demo(host: str, port: int) -> int:
    """Poll the freshly started simulator once, show the result, keep it up for exploring."""
    simulator = Simulator(
        default_scenario(), public_key=DEMO_PUBLIC_KEY, private_key=DEMO_PRIVATE_KEY
    )

    async def show(url: str) -> None:
        results = await poll_once(demo_settings(url))
        print(render_table(results))
        print(
            f"\nSimulated Atlas API: {url}{API_ROOT} (keys {DEMO_PUBLIC_KEY} / "
            f"{DEMO_PRIVATE_KEY})\nSimulator stats:     {url}/_simulator/stats\n"
            f"Poll it yourself:    MONGODB_ATLAS_BASE_URL={url} "
            f"MONGODB_ATLAS_PUBLIC_API_KEY={DEMO_PUBLIC_KEY} "
            f"MONGODB_ATLAS_PRIVATE_API_KEY={DEMO_PRIVATE_KEY} "
            f"atlas-endpoint-monitor once --config config/demo.yaml\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    return await serve_simulator_until_stopped(simulator, host, port, show)
