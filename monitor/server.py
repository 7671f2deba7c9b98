"""The daemon's HTTP side: /metrics, /healthz, /readyz, /-/reload and a landing page, with
the poll scheduler and the Atlas session living exactly as long as the app does, and
replaced when a reload changes what they were built from."""

from __future__ import annotations

import asyncio
import contextlib
import html
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable

import structlog
from aiohttp import hdrs, web
from prometheus_client.exposition import choose_encoder

from monitor import __version__
from monitor.config import ConfigError, Settings, load_settings
from monitor.exposition import MonitorMetrics
from monitor.lifecycle import serve_on_stack
from monitor.log_output import failing_reason
from monitor.logs import mask_secret
from monitor.polling.poller import Monitor, PollScheduler, build_client
from monitor.polling.statestore import StateStore
from monitor.reloads import STOPPING, ReloadQueue, in_daemon_thread
from monitor.webconfig import SwappableTLS, protect

log = structlog.get_logger(__name__)

MONITOR = web.AppKey("monitor", Monitor)

SettingsLoader = Callable[[], Settings]
"""Reads the settings afresh, for a reload; raises ConfigError."""

_PAGES = (
    ("/metrics", "Prometheus metrics"),
    ("/healthz", "liveness: 200 while the process runs"),
    ("/readyz", "readiness: 503 until the first poll cycle completed"),
)


class Runtime:
    """What a reload may replace while the Monitor (and every endpoint's state) stays: the
    settings, the Atlas session and the scheduler.

    Endpoint, alert and add-on-missing changes apply to the next check of each endpoint.
    Changes to ``atlas``, ``poll`` or the credentials restart polling (the cycle in flight
    is cancelled; the new one starts at once). The web config file (re-read each time) and
    ``server.enable_reload`` apply to the next request and TLS connection; the address,
    turning TLS on or off, and ``log`` need a restart.
    """

    def __init__(
        self,
        settings: Settings,
        load: SettingsLoader,
        monitor: Monitor,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self._load = load
        self._monitor = monitor
        self._clock = clock
        self._polling: contextlib.AsyncExitStack | None = None
        self._reloads = ReloadQueue(self._reload_now)
        self._parsing: asyncio.Future[tuple[Settings, bool]] | None = None
        self._stopping = False
        tls = settings.listener.tls
        self.tls = None if tls is None else SwappableTLS.serving(tls)
        """What the listening socket is given; a reload swaps the context inside."""

    async def start(self) -> None:
        polling = contextlib.AsyncExitStack()
        client = await polling.enter_async_context(
            build_client(self.settings, observer=self._monitor.metrics.observe_request)
        )
        scheduler = PollScheduler(self._monitor, client)
        scheduler.start()
        polling.push_async_callback(scheduler.stop)
        self._polling = polling

    async def stop(self) -> None:
        """Stop the scheduler and close the session; a stop wins over reloads: those
        waiting are dropped, a config parse under way is abandoned (its thread finishes
        alone), and only a reload already being applied (quick) is let finish."""
        self._stopping = True
        if self._parsing is not None:
            self._parsing.cancel()
        await self._reloads.close()
        await self._stop_polling()

    async def _stop_polling(self) -> None:
        polling, self._polling = self._polling, None
        if polling is not None:
            await polling.aclose()

    def reload_in_background(self, trigger: str) -> None:
        """For a signal handler, which cannot await; the outcome is logged."""
        self._reloads.request(trigger)

    async def reload(self, trigger: str) -> list[str]:
        """Re-read the settings and apply them; returns the problems that kept the old ones.
        Requests made while a reload runs share the next one (see monitor.reloads)."""
        return await asyncio.shield(self._reloads.request(trigger))

    async def _reload_now(self, trigger: str, requests: int) -> list[str]:
        if self._polling is None:
            return ["the daemon is not running"]
        # Parsing 10,000 endpoints takes seconds: off the event loop, so /healthz, scrapes
        # and polls go on meanwhile.
        self._parsing = in_daemon_thread(self._load_and_compare)
        try:
            new, config_changed = await self._parsing
        except ConfigError as error:
            self._monitor.metrics.config_rejected()
            log.error(
                "config_reload_failed", trigger=trigger, requests=requests, problems=error.problems
            )
            return error.problems
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return [STOPPING]
        finally:
            self._parsing = None
        await self._apply(new, trigger, requests, config_changed)
        return []

    def _load_and_compare(self) -> tuple[Settings, bool]:
        """The new settings, and whether their config differs from the current one: in the
        parse's thread, as comparing 10,000 endpoints takes a while too (settings are
        immutable, and only this reload replaces them)."""
        new = self._load()
        return new, new.config != self.settings.config

    async def _apply(
        self, new: Settings, trigger: str, requests: int, config_changed: bool
    ) -> None:
        old = self.settings
        restart = (new.config.atlas, new.config.poll, new.credentials) != (
            old.config.atlas,
            old.config.poll,
            old.credentials,
        )
        if new.credentials != old.credentials:
            for form in new.credentials.secret_forms:
                mask_secret(form)
        if restart:
            await self._stop_polling()
        if config_changed:
            # On the event loop, and about 0.5 s at 10,000 endpoints: skipped when a storm
            # of reloads finds the file as it was.
            self._monitor.reconfigure(new.config)
        unapplied = self._needs_restart(new)
        if self.tls is not None and new.listener.tls is not None:
            # Unconditional: the web config file can change while the YAML does not.
            self.tls.current = new.listener.tls
        self.settings = new
        if restart:
            await self.start()
        self._monitor.metrics.config_loaded(self._clock())
        for warning in new.warnings:
            log.warning("config_warning", problem=warning)
        log.info(
            "config_reloaded",
            trigger=trigger,
            requests=requests,
            endpoints=len(new.config.endpoints),
            polling_restarted=restart,
            listener=new.listener.describe(),
        )
        if unapplied:
            log.warning("config_reload_needs_restart", sections=unapplied)

    def _needs_restart(self, new: Settings) -> list[str]:
        old = self.settings
        server = (old.config.server.host, old.config.server.port) != (
            new.config.server.host,
            new.config.server.port,
        ) or (old.listener.tls is None) != (new.listener.tls is None)
        return [
            section
            for section, changed in (
                ("server", server),
                ("log", old.config.log != new.config.log),
                ("state", old.config.state != new.config.state),
            )
            if changed
        ]


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    settings: Settings,
    *,
    load: SettingsLoader | None = None,
    clock: Callable[[], float] = time.time,
    store: StateStore | None = None,
) -> web.Application:
    """One daemon: its own registry, state table, Atlas session and scheduler.

    The session and the scheduler start in the app's startup and stop in its cleanup, so
    whoever runs the app (the CLI, a test) gets the same orderly start and shutdown.
    ``load`` re-reads the settings for a reload; by default from ``settings.source``.
    ``store`` (opened, and closed, by the caller) keeps the state across restarts.
    """
    monitor = Monitor(settings.config, MonitorMetrics(), clock=clock, store=store)
    runtime = Runtime(settings, load or (lambda: load_settings(settings.source)), monitor, clock)
    app = web.Application()
    app[MONITOR] = monitor
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_running)
    protect(app, lambda: runtime.settings.listener)
    app.router.add_get("/", _landing_page)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_post("/-/reload", _reload)
    app.router.add_put("/-/reload", _reload)
    return app


async def _running(app: web.Application) -> AsyncIterator[None]:
    await app[RUNTIME].start()
    compressing = asyncio.create_task(app[MONITOR].metrics.keep_compressed())
    try:
        yield
    finally:
        compressing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await compressing
        await app[RUNTIME].stop()
        await app[MONITOR].save()  # what the cancelled cycle changed


async def _reload(request: web.Request) -> web.Response:
    """As Prometheus' own /-/reload: 200 when applied, 500 with the reasons when not; not
    there at all unless ``server.enable_reload``, as Prometheus without
    --web.enable-lifecycle."""
    runtime = request.app[RUNTIME]
    if not runtime.settings.config.server.enable_reload:
        raise web.HTTPNotFound()
    problems = await runtime.reload("http")
    if problems:
        text = "config not reloaded, the previous one stays in use:\n"
        return web.Response(status=500, text=text + "".join(f"  {p}\n" for p in problems))
    return web.Response(text="config reloaded\n")


async def _metrics(request: web.Request) -> web.StreamResponse:
    """Serves the state table as it is now; never waits for, or calls, Atlas.

    At 10,000 endpoints the text is about 30 MB, so it is never joined whole: it goes out
    piece by piece, or (as Prometheus asks) gzipped in a worker thread, where only the pieces
    not compressed yet (by an earlier scrape or in the background, see
    MonitorMetrics.keep_compressed) are compressed (see monitor.exposition.cache.Exposition).
    """
    _, content_type = choose_encoder(request.headers.get("Accept", ""))
    openmetrics = content_type.startswith("application/openmetrics-text")
    exposition = request.app[MONITOR].metrics.render(openmetrics=openmetrics)
    response = web.StreamResponse(headers={"Content-Type": content_type, "Vary": "Accept-Encoding"})
    # HEAD gets the headers a GET would, Content-Length included and no body: aiohttp would
    # send a StreamResponse's body even to HEAD, putting a keep-alive connection out of step.
    headers_only = request.method == hdrs.METH_HEAD
    chunks: Iterable[bytes]
    if _accepts_gzip(request):
        response.headers["Content-Encoding"] = "gzip"
        # One hand-off to a thread for the whole body: under load every await waits its turn
        # on the event loop behind the polls, so a scrape made of many would take many turns.
        compressed = await asyncio.get_running_loop().run_in_executor(None, exposition.gzip)
        response.content_length = len(compressed)
        chunks = (compressed,)
    else:
        chunks = exposition.chunks()
        if headers_only:
            response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    if not headers_only:
        for chunk in chunks:
            await response.write(chunk)  # waits only when the socket's buffer is full
    await response.write_eof()
    return response


def _accepts_gzip(request: web.Request) -> bool:
    for coding in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "") not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """Ready once the first cycle completed, and only while alert lines can be written: an
    orchestrator should notice a daemon whose alerts go nowhere (see monitor.log_output)."""
    if not request.app[MONITOR].ready:
        return web.Response(status=503, text="first poll cycle not completed yet\n")
    log_failure = failing_reason()
    if log_failure is not None:
        return web.Response(status=503, text=f"log lines cannot be written: {log_failure}\n")
    return web.Response(text="ready\n")


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


async def start_daemon(
    services: contextlib.AsyncExitStack,
    settings: Settings,
    load: SettingsLoader | None = None,
    store: StateStore | None = None,
) -> str:
    """Serve the daemon on the configured address, reloading on SIGHUP; returns its URL."""
    server = settings.config.server
    app = create_app(settings, load=load, store=store)
    url = await serve_on_stack(
        services,
        app,
        server.host,
        server.port,
        app[RUNTIME].tls,
        atlas_connections=settings.config.poll.concurrency,
    )
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGHUP)
    loop.add_signal_handler(signal.SIGHUP, app[RUNTIME].reload_in_background, "SIGHUP")

    def stop_reloading_on_sighup() -> None:
        # remove_signal_handler restores SIGHUP's default action, which would let a SIGHUP
        # during shutdown kill the daemon (exit 129): give back what was there instead (the
        # entry point's SIG_IGN, see monitor.__main__).
        loop.remove_signal_handler(signal.SIGHUP)
        if before is not None:
            signal.signal(signal.SIGHUP, before)

    services.callback(stop_reloading_on_sighup)
    log.info(
        "monitor_started",
        url=url,
        version=__version__,
        endpoints=len(settings.config.endpoints),
        interval_seconds=settings.config.poll.interval_seconds,
        atlas=settings.config.atlas.base_url,
        listener=settings.listener.describe(),
        reload_enabled=server.enable_reload,
    )
    return url
