"""The console on the agent's event loop: wiring into the runtime, the aiohttp app, SSE.

Why aiohttp: a mature asyncio HTTP server with TLS, cookies and streaming responses that runs
on the loop the agent already has (no second thread, so the engine, store and board are only
ever touched from one thread, as the runtime requires); no ASGI server or framework stack.

Live updates: one ``text/event-stream`` per open page. Fragments are rendered once per change
and language (and ack rights) and shared by every browser, so the cost does not grow with the
number of screens; the board is pushed as soon as an alarm event is recorded, live values and
health once per second while someone watches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from agent.console.auth import LoginLimiter, Session, Sessions
from agent.console.config import ConsoleConfig
from agent.console.i18n import TEXT, SiteClock, negotiate
from agent.console.readmodel import AlarmBoard, Health, LiveValues, health, health_from_status
from agent.console.render import board_fragment, health_fragment, page
from agent.console.render_live import LiveTable
from agent.logs import kv
from agent.runtime.actions import AlarmAcknowledger
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.build import Components
from agent.runtime.incidents import IncidentTap
from agent.runtime.ingest import Ingest
from agent.runtime.shelving import Shelving
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.runtime.status import StatusSnapshot
from agent.tags import TagTable
from agent.uplink import Uplink
from buffer.record import Stream
from drivers import Device
from rules import RuleEngine

__all__ = ["SESSION", "Console", "console_for"]

log = logging.getLogger("safeedge.console")

COOKIE: Final = "safeedge_session"
SESSION: Final = web.RequestKey("session", Session)
STATIC: Final = Path(__file__).parent / "static"
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Pulse:
    """Wakes every waiter at once; a waiter that times out just renders again."""

    def __init__(self) -> None:
        self._ev = asyncio.Event()

    def fire(self) -> None:
        self._ev.set()
        self._ev = asyncio.Event()

    async def wait(self, at_most_s: float) -> None:
        ev = self._ev
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), at_most_s)


class Console:
    """Built by the run when ``[console].enabled``; :meth:`serve` runs it until cancelled.

    ``url`` is set once the socket listens (the demo prints it, tests open it). A bind that
    fails (the port is taken) is logged and evented (``console_unavailable``) and the agent runs
    on without its console.
    """

    def __init__(
        self,
        *,
        cfg: ConsoleConfig,
        tags: TagTable,
        engine: RuleEngine,
        devices: tuple[Device, ...],
        alarms: AlarmRecorder,
        ingest: Ingest,
        incidents: IncidentTap | None = None,
        sink: RecordSink,
        stats: RuntimeStats,
        uplink: Uplink | None,
        config_hash: str,
        clock_ms: Callable[[], int],
    ) -> None:
        self.cfg = cfg
        self.tags = tags
        self.engine = engine
        self.devices = devices
        self.sink = sink
        self.stats = stats
        self.uplink = uplink
        self.config_hash = config_hash
        self.clock_ms = clock_ms
        self.clock = SiteClock(cfg.timezone)
        self.shelving = Shelving(max_s=cfg.shelve_max_s, clock_ms=clock_ms)
        self.board = AlarmBoard(tags=tags, history=cfg.history)
        self.live = LiveValues(tags=tags, span_s=cfg.sparkline_s)
        self.live_table = LiveTable(live=self.live, tags=tags, limits=engine.params,
                                    clock=self.clock)  # fmt: skip
        self.acker = AlarmAcknowledger(
            tag_index=tags.index, engine=engine, alarms=alarms, clock_ms=clock_ms,
            incidents=incidents,
        )  # fmt: skip
        alarms.shelving = self.shelving
        alarms.observers.append(self.board.on_events)
        ingest.observers.append(self.live.on_batch)
        self.sessions = Sessions(ttl_s=cfg.session_ttl_s)
        self.limiter = LoginLimiter()
        self.users = {u.name: u for u in cfg.users}
        self.url: str | None = None
        self._board_pulse = _Pulse()
        self._tick_pulse = _Pulse()
        self.board.listeners.append(self._board_pulse.fire)
        self._cache: dict[tuple[str, str, bool], tuple[object, str]] = {}
        self._ticks = 0
        self.watchers = 0  # open event streams (for the health page and the CPU report)
        # set by the run once its operations services exist: the health page then shows the
        # same snapshot as `safeedge status` (else it is made from the console's own parts)
        self.status: Callable[[], StatusSnapshot] | None = None

    def use_engine(
        self, engine: RuleEngine, *, config_hash: str, devices: tuple[Device, ...]
    ) -> None:
        """A reload applied new rules (and device settings) in place: same tag table."""
        self.engine = engine
        self.config_hash = config_hash
        self.devices = devices
        self.acker.use_engine(engine)
        self.live_table = LiveTable(live=self.live, tags=self.tags, limits=engine.params,
                                    clock=self.clock)  # fmt: skip
        self._cache.clear()

    # -- running --------------------------------------------------------------------------

    def app(self) -> web.Application:
        from agent.console import routes  # the request handlers (login, ack, shelve, pages)

        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024)
        routes.add(app, self)
        app.router.add_get("/events", self.events)
        app.router.add_static("/static", STATIC, append_version=False)
        return app

    async def serve(self) -> None:
        ctx = None
        if self.cfg.tls_cert_file is not None and self.cfg.tls_key_file is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cfg.tls_cert_file, self.cfg.tls_key_file)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.cfg.host, self.cfg.port, ssl_context=ctx)
            try:
                await site.start()
            except OSError as exc:
                # The console is the site's screen, not its safety function: a taken port must
                # not stop the polls and alarms (nor make systemd restart the agent in a loop).
                where = f"{self.cfg.host}:{self.cfg.port}"
                log.error(kv("console_unavailable", bind=where, error=exc))  # noqa: TRY400
                self.sink.event("console_unavailable", bind=where, error=str(exc))
                await asyncio.Event().wait()  # a helper task must not end: wait for the stop
            host, port = runner.addresses[0][:2]
            shown = f"[{host}]" if ":" in host else host
            self.url = f"{'https' if ctx else 'http'}://{shown}:{port}/"
            log.info(kv("console_listening", url=self.url))
            while True:
                await asyncio.sleep(1.0)
                self._ticks += 1
                for shelf in self.shelving.expire():
                    self.sink.event(
                        "alarm_unshelved", tag=shelf.tag, alarm=shelf.alarm, reason="expired"
                    )
                    log.info(kv("alarm_unshelved", tag=shelf.tag, alarm=shelf.alarm))
                    self.board.on_shelf("unshelve", shelf, user="")
                self._tick_pulse.fire()
        finally:
            await runner.cleanup()

    # -- sessions and rendering -------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = self.sessions.new()
        lang = request.query.get("lang")
        if lang in TEXT:
            session.lang = lang
        request[SESSION] = session
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        current: Session = request[SESSION]  # a login replaces it
        if fresh or current is not session:
            response.set_cookie(
                COOKIE, current.id, httponly=True, samesite="Strict", secure=self.cfg.tls,
                path="/",
            )  # fmt: skip
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def lang(self, request: web.Request) -> str:
        session: Session = request[SESSION]
        return negotiate(request.headers.get("Accept-Language"), session.lang, self.cfg.language)

    def fragment(self, which: str, lang: str, can_act: bool) -> str:
        if which == "board":
            version: object = (self.board.version, len(self.shelving.shelves()))
        elif which == "cells":
            version = (self._ticks, self.live.version)
        else:
            version = self._ticks if which == "health" else (self._ticks, self.live.version)
        key = (which, lang, can_act)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        if which == "board":
            html = board_fragment(
                self.board, self.shelving.shelves(), lang=lang, clock=self.clock, can_act=can_act
            )
        elif which == "live":
            html = self.live_table.render(lang)
        elif which == "cells":
            html = self.live_table.cells(lang)
        else:
            html = health_fragment(self.health(), lang=lang)
        self._cache[key] = (version, html)
        return html

    def health(self) -> Health:
        if self.status is not None:  # the run's operations snapshot (safeedge status)
            return health_from_status(self.status(), problems=self.live.problems)
        stats = self.sink.store.stats()
        return health(
            devices=self.devices,
            seen=self.live.online,
            problems=self.live.problems,
            backlog={s.wire_name: stats.streams[s].undelivered for s in Stream},
            uplink_connected=None if self.uplink is None else self.uplink.connected,
            config_hash=self.config_hash,
            append_failures=self.stats.append_failures,
            polls=self.stats.polls,
        )

    def shell(self, request: web.Request, which: str, body: str) -> web.Response:
        session: Session = request[SESSION]
        lang = self.lang(request)
        other = "en" if lang == "zh" else "zh"
        html = page(
            lang=lang, title=f"{TEXT[lang][which]} · {TEXT[lang]['title']}", active=which,
            user=session.user, role=session.role, csrf=session.csrf, body=body,
            other_lang_href=f"{request.path}?lang={other}",
        )  # fmt: skip
        return web.Response(text=html, content_type="text/html")

    def may_see(self, session: Session, which: str) -> bool:
        return session.user is not None or (which == "board" and self.cfg.anonymous_board)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /events?page=board|live|health``: the page's fragment on every change."""
        session: Session = request[SESSION]
        which = request.query.get("page", "board")
        if which not in ("board", "live", "health"):
            raise web.HTTPBadRequest(text="page must be board, live or health")
        if not self.may_see(session, which):
            raise web.HTTPForbidden(text="log in first")
        lang = self.lang(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **_HEADERS})
        await resp.prepare(request)
        self.watchers += 1
        sent, structure = "", None
        try:
            while True:
                if self.sessions.get(session.id) is None and session.user is not None:
                    break  # logged out or expired: the page reloads and asks again
                if which == "live" and structure == self.live_table.structure():
                    cells = self.fragment("cells", lang, False)  # only the changing cells
                    if cells != sent:
                        await resp.write(f"event: cells\ndata: {cells}\n\n".encode())
                        sent = cells
                    await self._tick_pulse.wait(15.0)
                    continue
                structure = self.live_table.structure()
                html = self.fragment(which, lang, session.can_act)
                if html != sent:
                    data = "".join(f"data: {line}\n" for line in html.split("\n"))
                    await resp.write(f"{data}\n".encode())
                    sent = html
                else:
                    await resp.write(b": keepalive\n\n")
                if which == "board":
                    await self._board_pulse.wait(15.0)
                else:
                    await self._tick_pulse.wait(15.0)
        except ConnectionResetError:  # the browser went away
            pass
        finally:
            self.watchers -= 1
        return resp


def console_for(
    c: Components,
    alarms: AlarmRecorder,
    ingest: Ingest,
    sink: RecordSink,
    stats: RuntimeStats,
    incidents: IncidentTap | None,
) -> Console:
    """The console for one run's parts (the run imports this module only when enabled)."""
    return Console(
        cfg=c.cfg.console,
        tags=c.tags,
        engine=c.engine,
        devices=c.devices,
        alarms=alarms,
        ingest=ingest,
        incidents=incidents,
        sink=sink,
        stats=stats,
        uplink=c.uplink,
        config_hash=c.config_hash,
        clock_ms=c.clock_ms,
    )
