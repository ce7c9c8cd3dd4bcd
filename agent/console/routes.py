"""The console's request handlers: pages, login and logout, ack, shelve, unshelve.

Every POST checks the CSRF token first (403 without it), then the role (403 for a viewer),
then the arguments (400 naming what is wrong). Logins, failed logins, acks and shelves are
logged (browser text escaped) and recorded as events that go upstream like any other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, get_args

from aiohttp import web

from agent.commands import AckAlarmArgs, CommandRejectedError
from agent.console.auth import clean
from agent.console.passwords import verify_password
from agent.console.render import login_page
from agent.console.server import SESSION
from agent.logs import kv
from rules.events import AlarmKind

if TYPE_CHECKING:
    from agent.console.auth import Session
    from agent.console.server import Console

__all__ = ["add"]

log = logging.getLogger("safeedge.console")
_KINDS: Final = frozenset(get_args(AlarmKind))


def add(app: web.Application, console: Console) -> None:
    h = _Handlers(console)
    app.router.add_get("/", h.board)
    app.router.add_get("/live", h.live)
    app.router.add_get("/health", h.health)
    app.router.add_get("/login", h.login_form)
    app.router.add_post("/login", h.login)
    app.router.add_post("/logout", h.logout)
    app.router.add_post("/ack", h.ack)
    app.router.add_post("/shelve", h.shelve)
    app.router.add_post("/unshelve", h.unshelve)


def _field(form: dict[str, str], name: str, limit: int) -> str:
    value = form.get(name, "").strip()
    if len(value) > limit:
        raise web.HTTPBadRequest(text=f"{name}: at most {limit} characters")
    return value


class _Handlers:
    def __init__(self, console: Console) -> None:
        self.c = console

    def _page(self, request: web.Request, which: str) -> web.Response:
        session: Session = request[SESSION]
        if not self.c.may_see(session, which):
            raise web.HTTPFound("/login")
        fragment = self.c.fragment(which, self.c.lang(request), session.can_act)
        return self.c.shell(request, which, fragment)

    async def board(self, request: web.Request) -> web.Response:
        return self._page(request, "board")

    async def live(self, request: web.Request) -> web.Response:
        return self._page(request, "live")

    async def health(self, request: web.Request) -> web.Response:
        return self._page(request, "health")

    async def login_form(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        html = login_page(lang=self.c.lang(request), csrf=session.csrf, error=None)
        return web.Response(text=html, content_type="text/html")

    async def _form(self, request: web.Request) -> dict[str, str]:
        """The POSTed form, after the CSRF check (403 when the token is missing or wrong)."""
        session: Session = request[SESSION]
        data = await request.post()
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        token = request.headers.get("X-CSRF-Token") or form.get("csrf")
        if not self.c.sessions.csrf_ok(session, token):
            log.warning(kv("console_csrf_refused", path=request.path, remote=request.remote))
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        return form

    def _operator(self, request: web.Request) -> Session:
        session: Session = request[SESSION]
        if not session.can_act:
            log.warning(kv("console_forbidden", path=request.path, user=session.user or "-"))
            raise web.HTTPForbidden(text="only an operator may do this")
        return session

    async def login(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        session: Session = request[SESSION]
        name = _field(form, "user", 64)
        remote = request.remote or "?"
        keys = (f"ip:{remote}", f"user:{name}")
        lang = self.c.lang(request)
        if self.c.limiter.blocked(*keys):
            log.warning(kv("console_login_limited", user=clean(name), remote=remote))
            html = login_page(lang=lang, csrf=session.csrf, error="too_many")
            return web.Response(status=429, text=html, content_type="text/html")
        user = self.c.users.get(name)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            None, verify_password, form.get("password", ""), None if user is None else
            user.password_hash,
        )  # fmt: skip
        if not ok or user is None:
            self.c.limiter.failed(*keys)
            log.warning(kv("console_login_failed", user=clean(name), remote=remote))
            self.c.sink.event("console_login_failed", user=name[:64], remote=remote)
            html = login_page(lang=lang, csrf=session.csrf, error="login_failed")
            return web.Response(status=401, text=html, content_type="text/html")
        self.c.limiter.succeeded(*keys)
        self.c.sessions.drop(session.id)
        fresh = self.c.sessions.new(user=user.name, role=user.role)
        fresh.lang = session.lang
        request[SESSION] = fresh
        log.info(kv("console_login", user=user.name, role=user.role, remote=remote))
        self.c.sink.event("console_login", user=user.name, role=user.role, remote=remote)
        raise web.HTTPSeeOther("/")

    async def logout(self, request: web.Request) -> web.Response:
        await self._form(request)
        session: Session = request[SESSION]
        if session.user is not None:
            log.info(kv("console_logout", user=session.user))
        self.c.sessions.drop(session.id)
        request[SESSION] = self.c.sessions.new()
        raise web.HTTPSeeOther("/login")

    def _target(self, form: dict[str, str]) -> tuple[str, str]:
        tag, alarm = _field(form, "tag", 200), _field(form, "alarm", 20)
        if tag not in self.c.tags.index:
            raise web.HTTPBadRequest(text="tag: not a configured tag")
        if alarm not in _KINDS:
            raise web.HTTPBadRequest(text=f"alarm: one of {', '.join(sorted(_KINDS))}")
        return tag, alarm

    async def ack(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        session = self._operator(request)
        tag, alarm = self._target(form)
        if alarm not in ("high", "low"):
            raise web.HTTPBadRequest(text="alarm: only high and low alarms are acknowledged")
        comment = _field(form, "comment", 1024) or None
        args = AckAlarmArgs(tag=tag, alarm=alarm, user=session.user, comment=comment)  # type: ignore[arg-type]
        try:
            detail = self.c.acker.ack_alarm(args, source="local")
        except CommandRejectedError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        log.info(kv("console_ack", user=session.user, tag=tag, alarm=alarm, result=detail))
        return self._done(request, detail)

    async def shelve(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        session = self._operator(request)
        tag, alarm = self._target(form)
        reason = _field(form, "reason", 200)
        try:
            minutes = float(form.get("minutes", "60"))
            shelf = self.c.shelving.shelve(
                tag=tag, alarm=alarm, user=session.user or "?", reason=reason,
                duration_s=minutes * 60,
            )  # fmt: skip
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"shelve: {exc}") from exc
        log.info(kv("alarm_shelved", user=session.user, tag=tag, alarm=alarm,
                    reason=clean(reason), until_ms=shelf.until_ms))  # fmt: skip
        self.c.sink.event(
            "alarm_shelved", tag=tag, alarm=alarm, user=session.user, reason=reason,
            until_ms=shelf.until_ms,
        )  # fmt: skip
        self.c.board.on_shelf("shelve", shelf, user=session.user or "")
        return self._done(request, f"{tag} {alarm} shelved")

    async def unshelve(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        session = self._operator(request)
        tag, alarm = self._target(form)
        shelf = self.c.shelving.unshelve(tag, alarm)
        if shelf is None:
            raise web.HTTPBadRequest(text=f"{tag} {alarm} is not shelved")
        log.info(kv("alarm_unshelved", user=session.user, tag=tag, alarm=alarm))
        self.c.sink.event("alarm_unshelved", tag=tag, alarm=alarm, user=session.user,
                          reason="operator")  # fmt: skip
        self.c.board.on_shelf("unshelve", shelf, user=session.user or "")
        return self._done(request, f"{tag} {alarm} unshelved")

    def _done(self, request: web.Request, detail: str) -> web.Response:
        if request.headers.get("X-CSRF-Token"):  # console.js: an answer, not a page
            return web.json_response({"ok": True, "detail": detail})
        raise web.HTTPSeeOther("/")
