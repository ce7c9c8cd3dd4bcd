"""An incident report as files: self-contained HTML with plots, CSV of the window, JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.review.history import QUALITY_NAMES, point_log
from agent.review.incident import Incident
from agent.review.render import figure, html_page, html_table, img, plot_lang
from agent.review.text import Lang, SiteTime, duration, t

__all__ = ["incident_csv", "incident_html", "incident_json"]


def _days(ms: np.ndarray) -> np.ndarray:
    """Epoch ms → matplotlib date numbers (days since 1970-01-01 UTC, its default epoch)."""
    return ms.astype(np.float64) / 86_400_000.0


def incident_csv(inc: Incident, site: SiteTime) -> str:
    """The window's samples as tidy CSV: time, tag, value, unit, quality."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("time", "tag", "value", "unit", "quality"))
    pts = point_log(inc.points, dedup=True)
    order = np.lexsort((pts.tag, pts.ts_ms))
    for i in order.tolist():
        v = pts.value[i]
        w.writerow(
            (
                site.fmt(int(pts.ts_ms[i]), ms_digits=True),
                pts.tags[int(pts.tag[i])],
                "" if np.isnan(v) else repr(float(v)),
                inc.units.get(pts.tags[int(pts.tag[i])], ""),
                QUALITY_NAMES[int(pts.quality[i])],
            )
        )
    return out.getvalue()


def incident_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=1, allow_nan=False)


def _plots(inc: Incident, report: Mapping[str, Any], lang: Lang, site: SiteTime) -> str:
    pl = plot_lang(lang)
    pts = point_log(inc.points, dedup=True)
    out = []
    for info in report["tags"]:
        ts, v, _ = pts.of(info["tag"])
        if not ts.shape[0]:
            continue
        fig = figure(9.0, 2.8)
        ax = fig.add_subplot()
        ax.plot(_days(ts), v, linewidth=0.9, label=info["tag"])
        ax.xaxis_date(tz=site.zone)
        colours = {
            "high": "#e0a000",
            "high_high": "#b00020",
            "low": "#e0a000",
            "low_low": "#b00020",
        }
        for key, lim in info["limits"].items():
            if key in colours:
                ax.axhline(
                    float(lim),
                    color=colours[key],
                    linestyle="--",
                    linewidth=1,
                    label=f"{key} {lim:g}",
                )
        ax.axvline(float(_days(np.array([inc.opened_ms]))[0]), color="#555", linewidth=0.8)
        ax.set_title(f"{info['tag']} ({info['unit']})" if pl else info["tag"])
        ax.legend(loc="upper right", fontsize=7)
        fig.autofmt_xdate()
        out.append(img(fig, info["tag"]))
    return "".join(out)


def incident_html(
    inc: Incident, report: Mapping[str, Any], *, lang: Lang, site: SiteTime, gateway: str
) -> str:
    tr = report["trigger"]
    closed = report["closed_ms"]
    meta = [
        f"{gateway} · {t('incident', lang)} {inc.id}",
        f"{t('opened', lang)}: {site.fmt(inc.opened_ms)} · {t('closed', lang)}: "
        + (f"{site.fmt(closed)} ({report['reason']})" if closed is not None else t("open", lang)),
        f"{t('trigger', lang)}: {tr['tag']} {tr['alarm']} {tr['event']} L{tr['level']}"
        f" = {tr['value']}",
        f"{t('timezone', lang)}: {site.name} (UTC{site.offset(inc.opened_ms)})",
    ]
    timeline = html_table(
        [
            t("time", lang),
            t("since_raise", lang),
            t("tag", lang),
            t("alarm", lang),
            t("event", lang),
            t("level", lang),
            t("value", lang),
            t("who", lang),
        ],
        [
            [
                site.fmt(e["ts_ms"]),
                ("−" if e["ts_ms"] < inc.opened_ms else "+")
                + duration(abs(e["ts_ms"] - inc.opened_ms)),
                e["tag"],
                e["alarm"],
                e["event"],
                e["level"],
                "" if e.get("value") is None else f"{e['value']:g}",
                e.get("user") or "",
            ]
            for e in report["timeline"]
        ],
    )
    rows = []
    alarmed = {e["tag"] for e in report["timeline"]} | {tr["tag"]}
    for info in report["tags"]:
        # a tag that never went beyond a limit and had no alarm gets its peak only in the plot
        beyond = [(k, ms) for k, ms in info["beyond_ms"].items() if ms > 0]
        if info["tag"] not in alarmed and not beyond:
            continue
        for key, ms in beyond:
            label = t("above", lang, limit=key, value=f"{info['limits'][key]:g}")
            rows.append([info["tag"], label, duration(ms)])
        if info["peak"] is not None:
            at = f"{info['peak']:g} {info['unit']} @ {site.fmt(info['peak_ms'])}"
            rows.append([info["tag"], t("peak_at", lang), at])
    for o in report["to_ack"]:
        rows.append(
            [
                o["tag"],
                f"{t('to_ack', lang)} ({o['alarm']})",
                duration(o["after_ms"]) + (f" — {o['who']}" if o["who"] else ""),
            ]
        )
    for o in report["to_clear"]:
        rows.append([o["tag"], f"{t('to_clear', lang)} ({o['alarm']})", duration(o["after_ms"])])
    durations = html_table([t("tag", lang), t("figure", lang), t("value", lang)], rows)
    leads = html_table(
        [t("tag", lang), t("time", lang), "eta_s", t("lead", lang)],
        [
            [
                x["tag"],
                site.fmt(x["ts_ms"]),
                "" if x["eta_s"] is None else f"{x['eta_s']:.0f}",
                t("none", lang) if x["lead_ms"] is None else duration(x["lead_ms"]),
            ]
            for x in report["trend_leads"]
        ],
    )
    health = html_table(
        [t("tag", lang), t("samples", lang), t("good", lang), t("bad", lang), t("max_gap", lang)],
        [
            [
                i["tag"],
                i["samples"],
                i["quality"].get("good", 0),
                i["samples"] - i["quality"].get("good", 0),
                "" if i["max_gap_ms"] is None else duration(i["max_gap_ms"]),
            ]
            for i in report["tags"]
        ],
    )
    if report["device_events"]:
        health += html_table(
            [t("time", lang), t("event", lang), t("device", lang)],
            [[site.fmt(e["ts"]), e["kind"], e.get("device", "")] for e in report["device_events"]],
        )
    sections = [
        (t("timeline", lang), timeline),
        (t("durations", lang), durations),
        (t("early", lang), leads),
        (t("health", lang), health),
        (t("plots", lang), _plots(inc, report, lang, site)),
    ]
    return html_page(
        title=f"{t('title_incident', lang)} {inc.id}", lang=lang, meta=meta, sections=sections
    )
