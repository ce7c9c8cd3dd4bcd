"""Server-rendered HTML: the page shell and the fragments the SSE stream pushes.

Every value from outside (tag names, user names, comments, reasons) goes through
:func:`html.escape`. Fragments do not depend on the session except for ``can_act`` (whether
ack/shelve controls are shown); the CSRF token is in the shell's ``<meta name="csrf">`` and
added by console.js when a form is submitted, so one rendered fragment serves every browser.
A bad-quality value is shown as its quality name, never as a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from html import escape

from agent.console.i18n import TEXT, SiteClock
from agent.console.readmodel import AlarmBoard, BoardAlarm, Health
from agent.runtime.shelving import Shelf

__all__ = ["board_fragment", "health_fragment", "login_page", "page"]

Limits = Callable[[int], Mapping[str, object]]
_GRADE_ORDER = {"l2": 0, "l1": 1, "fault": 2}


def _graded(alarm: str, event: str) -> bool:
    """History shows 一级/二级 on raise and escalate of process alarms (a fault has no grade)."""
    return event in ("raise", "escalate") and alarm not in ("fault", "stuck")


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4g}"


def page(
    *, lang: str, title: str, active: str, user: str | None, role: str | None, csrf: str,
    body: str, other_lang_href: str,
) -> str:  # fmt: skip
    t = TEXT[lang]
    nav = "".join(
        f'<a href="/{"" if p == "board" else p}" class="{"on" if p == active else ""}">{t[p]}</a>'
        for p in ("board", "live", "health")
    )
    if user is None:
        who = f'<span>{t["anonymous"]}</span> <a href="/login">{t["login"]}</a>'
    else:
        who = (
            f'<span id="who">{escape(user)} ({t[role or "viewer"]})</span> '
            f'<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<button type="submit">{t["logout"]}</button></form>'
        )
    return (
        f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
        f'<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f'<meta name="csrf" content="{escape(csrf)}"><title>{escape(title)}</title>'
        f'<link rel="stylesheet" href="/static/console.css"></head><body>'
        f'<header><b>{t["title"]}</b><nav>{nav}</nav><span class="right">{who} '
        f'<button id="mute" type="button" data-mute="{t["mute"]}" data-unmute="{t["unmute"]}">'
        f'{t["mute"]}</button> <a href="{escape(other_lang_href)}">{t["lang_other"]}</a>'
        f"</span></header>"
        f'<main id="content" data-page="{active}">{body}</main>'
        f'<script src="/static/console.js"></script></body></html>'
    )


def login_page(*, lang: str, csrf: str, error: str | None) -> str:
    t = TEXT[lang]
    err = f'<p class="error" id="login-error">{t[error]}</p>' if error else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{t["login"]}</title>'
        f'<link rel="stylesheet" href="/static/console.css"></head><body class="login">'
        f'<form method="post" action="/login" id="login"><h1>{t["title"]}</h1>{err}'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<label>{t["user"]} <input name="user" autocomplete="username" required></label>'
        f'<label>{t["password"]} <input name="password" type="password" '
        f'autocomplete="current-password" required></label>'
        f'<button type="submit">{t["login"]}</button></form></body></html>'
    )


def _alarm_row(a: BoardAlarm, t: dict[str, str], clock: SiteClock, can_act: bool) -> str:
    state = t["latched"] if a.returned else (t["acked"] if a.acked else t["unacked"])
    cls = f"alarm {a.grade}{'' if a.acked else ' unacked'}{' returned' if a.returned else ''}"
    acts = ""
    if can_act:
        tag, kind = escape(a.tag), escape(a.alarm)
        hidden = f'<input type="hidden" name="tag" value="{tag}">' \
                 f'<input type="hidden" name="alarm" value="{kind}">'  # fmt: skip
        if not a.acked and a.alarm in ("high", "low"):
            acts += (
                f'<form method="post" action="/ack" class="act">{hidden}'
                f'<input name="comment" placeholder="{t["comment"]}" maxlength="200">'
                f'<button type="submit" class="ack">{t["ack"]}</button></form>'
            )
        acts += (
            f'<form method="post" action="/shelve" class="act">{hidden}'
            f'<input name="reason" placeholder="{t["reason"]}" required maxlength="200">'
            f'<input name="minutes" type="number" min="0.1" step="any" value="60" class="min">'
            f'{t["minutes"]}'
            f'<button type="submit" class="shelve">{t["shelve"]}</button></form>'
        )
    detail = f" ({escape(a.reason)})" if a.reason else ""
    return (
        f'<tr class="{cls}" data-key="{escape(a.key)}" data-level="{a.level}">'
        f'<td><span class="badge {a.grade}">{t[a.grade]}</span></td>'
        f'<td class="tag">{escape(a.tag)}</td><td>{t.get(a.alarm, escape(a.alarm))}{detail}</td>'
        f"<td>{clock.full(a.since_ms)}</td><td>{_num(a.value)}</td><td>{_num(a.limit)}</td>"
        f'<td class="state">{state}</td><td>{acts}</td></tr>'
    )


def board_fragment(
    board: AlarmBoard, shelves: list[Shelf], *, lang: str, clock: SiteClock, can_act: bool
) -> str:
    t = TEXT[lang]
    hidden = {(s.tag, s.alarm) for s in shelves}
    shown = [a for k, a in board.active.items() if k not in hidden]
    shown.sort(key=lambda a: (_GRADE_ORDER[a.grade], a.acked, -a.since_ms))
    l2 = " ".join(escape(a.key) for a in shown if a.grade == "l2" and not a.acked)
    head = "".join(
        f"<th>{t[k]}</th>"
        for k in ("grade", "tag", "alarm", "since", "value", "limit", "acked")
    ) + "<th></th>"  # fmt: skip
    rows = "".join(_alarm_row(a, t, clock, can_act) for a in shown)
    table = (
        f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        if shown else f'<p class="empty">{t["no_alarms"]}</p>'
    )  # fmt: skip
    shelf_rows = ""
    for s in shelves:
        undo = ""
        if can_act:
            undo = (
                f'<form method="post" action="/unshelve" class="act">'
                f'<input type="hidden" name="tag" value="{escape(s.tag)}">'
                f'<input type="hidden" name="alarm" value="{escape(s.alarm)}">'
                f'<button type="submit">{t["unshelve"]}</button></form>'
            )
        shelf_rows += (
            f'<li class="shelf" data-key="{escape(s.tag)}/{escape(s.alarm)}">{escape(s.tag)} '
            f'{t.get(s.alarm, escape(s.alarm))} — {escape(s.reason)} ({escape(s.user)}), '
            f"{t['until']} {clock.full(s.until_ms)} {undo}</li>"
        )
    shelved = f'<h3>{t["shelved"]}</h3><ul class="shelves">{shelf_rows}</ul>' if shelves else ""
    hist = "".join(
        f'<tr class="h {escape(h.event)}"><td>{clock.short(h.ts_ms)}</td><td>{escape(h.tag)}</td>'
        f"<td>{t.get(h.alarm, escape(h.alarm))}</td>"
        f"<td>{t.get(h.event + '_ev', t.get(h.event, escape(h.event)))}"
        f"{' ' + t['l' + str(h.level)] if _graded(h.alarm, h.event) else ''}</td>"
        f"<td>{_num(h.value)}</td><td class='who'>{escape(h.user or '')}"
        f"{' (' + t.get(h.source, escape(h.source)) + ')' if h.source else ''}</td>"
        f"<td>{escape(h.comment or '')}</td></tr>"
        for h in board.history
    )
    hist_head = "".join(
        f"<th>{t[k]}</th>" for k in ("time", "tag", "alarm", "event", "value", "who", "comment")
    )
    return (
        f'<div id="board" data-version="{board.version}" data-changed-ms="{board.changed_ms}" '
        f'data-l2="{l2}"><p class="tz">{t["updated"]} {clock.full(board.changed_ms)}</p>'
        f"{table}{shelved}<h3>{t['history']}</h3>"
        f'<table class="history"><thead><tr>{hist_head}</tr></thead><tbody>{hist}</tbody>'
        f"</table></div>"
    )


def health_fragment(h: Health, *, lang: str) -> str:
    t = TEXT[lang]
    devs = "".join(
        f'<tr class="{"ok" if ok else "bad"}"><td>{escape(n)}</td>'
        f"<td>{t['online'] if ok else t['offline']}</td><td>{escape(why)}</td></tr>"
        for n, ok, why in h.devices
    )
    backlog = ", ".join(f"{escape(k)}: {v}" for k, v in h.backlog.items())
    degraded = "".join(f"<li>{escape(d)}</li>" for d in h.degraded) or f"<li>{t['none']}</li>"
    return (
        f'<div id="health"><table class="kv">'
        f'<tr><th>{t["uplink"]}</th><td id="uplink" class="{h.uplink}">{t[h.uplink]}</td></tr>'
        f'<tr><th>{t["backlog"]}</th><td id="backlog">{backlog}</td></tr>'
        f'<tr><th>{t["config_hash"]}</th><td><code>{escape(h.config_hash)}</code></td></tr>'
        f'<tr><th>{t["polls"]}</th><td>{h.polls}</td></tr></table>'
        f'<h3>{t["degraded"]}</h3><ul id="degraded">{degraded}</ul>'
        f'<h3>{t["device"]}</h3><table class="devices">{devs}</table></div>'
    )
