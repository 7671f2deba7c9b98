"""The daemon's HTTP side: /metrics, /healthz, /readyz and a landing page, with the poll
scheduler and the Atlas session living exactly as long as the app does."""

from __future__ import annotations

import contextlib
import html
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from monitor import __version__
from monitor.config import Settings
from monitor.lifecycle import serve_on_stack
from monitor.metrics import MonitorMetrics
from monitor.poller import Monitor, PollScheduler, build_client

log = structlog.get_logger(__name__)

MONITOR = web.AppKey("monitor", Monitor)

_PAGES = (
    ("/metrics", "Prometheus metrics"),
    ("/healthz", "liveness: 200 while the process runs"),
    ("/readyz", "readiness: 503 until the first poll cycle completed"),
)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """One daemon: its own registry, state table, Atlas session and scheduler.

    The session and the scheduler start in the app's startup and stop in its cleanup, so
    whoever runs the app (the CLI, a test) gets the same orderly start and shutdown.
    """
    monitor = Monitor(settings.config, MonitorMetrics(), clock=clock)
    app = web.Application()
    app[MONITOR] = monitor
    app.cleanup_ctx.append(_polling(settings, monitor))
    app.router.add_get("/", _landing_page)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


def _polling(
    settings: Settings, monitor: Monitor
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def polling(app: web.Application) -> AsyncIterator[None]:
        async with build_client(settings, observer=monitor.metrics.observe_request) as client:
            scheduler = PollScheduler(monitor, client)
            scheduler.start()
            try:
                yield
            finally:
                await scheduler.stop()

    return polling


async def _metrics(request: web.Request) -> web.Response:
    """Renders the state table as it is now; never waits for, or calls, Atlas."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[MONITOR].metrics.registry)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    response.enable_compression()
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[MONITOR].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="first poll cycle not completed yet\n")


async def _landing_page(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR]
    links = "".join(
        f'<li><a href="{path}">{path}</a>: {html.escape(what)}</li>' for path, what in _PAGES
    )
    body = (
        "<!doctype html><html><head><title>atlas-endpoint-monitor</title></head><body>"
        f"<h1>atlas-endpoint-monitor {html.escape(__version__)}</h1>"
        f"<p>Watching {len(monitor.config.endpoints)} interface endpoints every "
        f"{monitor.config.poll.interval_seconds:g} s.</p><ul>{links}</ul></body></html>"
    )
    return web.Response(text=body, content_type="text/html")


async def start_daemon(services: contextlib.AsyncExitStack, settings: Settings) -> str:
    """Serve the daemon on the configured address; returns its base URL."""
    server = settings.config.server
    url = await serve_on_stack(services, create_app(settings), server.host, server.port)
    log.info(
        "monitor_started",
        url=url,
        version=__version__,
        endpoints=len(settings.config.endpoints),
        interval_seconds=settings.config.poll.interval_seconds,
        atlas=settings.config.atlas.base_url,
    )
    return url
