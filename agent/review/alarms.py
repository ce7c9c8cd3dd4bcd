"""``safeedge review alarms``: the KPI report for a period, as a terminal table and HTML."""

from __future__ import annotations

import numpy as np

from agent.review.kpi import AlarmKpis
from agent.review.render import (
    figure,
    html_page,
    html_table,
    img,
    kpi_html_table,
    plot_lang,
    print_kpi_table,
    print_table,
)
from agent.review.text import Lang, SiteTime, duration, kpi_rows, t

__all__ = ["alarm_report_html", "print_alarm_report"]


def _meta(k: AlarmKpis, lang: Lang, site: SiteTime, gateway: str) -> list[str]:
    return [
        f"{gateway} · {t('period', lang)}: {site.fmt(k.from_ms)} – {site.fmt(k.to_ms)}",
        f"{t('timezone', lang)}: {site.name} (UTC{site.offset(k.from_ms)})",
    ]


def print_alarm_report(k: AlarmKpis, *, lang: Lang, site: SiteTime, gateway: str) -> None:
    title = f"{t('title_alarms', lang)} — " + " · ".join(_meta(k, lang, site, gateway))
    print_kpi_table(title, kpi_rows(k, lang), lang)
    if k.bad_actors:
        print_table(
            t("bad_actors", lang),
            [t("tag", lang), t("alarm", lang), t("count", lang), t("share", lang)],
            [[a.tag, a.alarm, a.count, f"{100 * a.share:.1f} %"] for a in k.bad_actors],
        )
    if k.faults_by_device:
        print_table(
            t("faults", lang),
            [t("device", lang), t("fault", lang), t("stuck", lang), t("lost", lang)],
            [[d, *v] for d, v in k.faults_by_device.items()],
        )


def _plots(k: AlarmKpis, lang: Lang, site: SiteTime) -> str:
    pl = plot_lang(lang)
    out = []
    fig = figure()
    ax = fig.add_subplot()
    starts = (k.from_ms + 600_000 * np.arange(len(k.counts_10min))) / 86_400_000.0  # mpl dates
    ax.step(starts, k.counts_10min, where="post", linewidth=0.8)
    ax.xaxis_date(tz=site.zone)
    ax.axhline(10, color="#b00020", linestyle="--", linewidth=1, label=t("flood_line", pl))
    ax.set_title(t("plot_rate", pl))
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    out.append(img(fig, t("plot_rate", lang)))
    if k.bad_actors:
        fig = figure(9.0, 3.6)
        ax = fig.add_subplot()
        names = [f"{a.tag} {a.alarm}" for a in reversed(k.bad_actors)]
        ax.barh(names, [a.count for a in reversed(k.bad_actors)], color="#c46a1b")
        ax.set_title(t("plot_actors", pl))
        out.append(img(fig, t("plot_actors", lang)))
    if k.priority:
        fig = figure(5.0, 2.6)
        ax = fig.add_subplot()
        levels = sorted(k.priority)
        ax.bar(
            [f"L{lv}" for lv in levels],
            [k.priority[lv] for lv in levels],
            color=["#e0a000" if lv == 1 else "#b00020" for lv in levels],
        )
        ax.set_title(t("plot_prio", pl))
        out.append(img(fig, t("plot_prio", lang)))
    return "".join(out)


def alarm_report_html(
    k: AlarmKpis, *, lang: Lang, site: SiteTime, gateway: str, with_plots: bool = True
) -> str:
    """The whole report as one self-contained HTML page."""
    sections = [(t("figures", lang), kpi_html_table(kpi_rows(k, lang), lang))]
    if k.bad_actors:
        sections.append(
            (
                t("bad_actors", lang),
                html_table(
                    [t("tag", lang), t("alarm", lang), t("count", lang), t("share", lang)],
                    [[a.tag, a.alarm, a.count, f"{100 * a.share:.1f} %"] for a in k.bad_actors],
                ),
            )
        )
    if k.standing_list:
        sections.append(
            (
                t("standing", lang),
                html_table(
                    [
                        t("tag", lang),
                        t("alarm", lang),
                        t("level", lang),
                        t("opened", lang),
                        t("durations", lang),
                    ],
                    [
                        [tag, alarm, level, site.fmt(ts), duration(k.to_ms - ts)]
                        for tag, alarm, level, ts in k.standing_list[:50]
                    ],
                ),
            )
        )
    if k.faults_by_device:
        sections.append(
            (
                t("faults", lang),
                html_table(
                    [t("device", lang), t("fault", lang), t("stuck", lang), t("lost", lang)],
                    [[d, *v] for d, v in k.faults_by_device.items()],
                ),
            )
        )
    if with_plots:
        sections.append((t("plots", lang), _plots(k, lang, site)))
    return html_page(
        title=t("title_alarms", lang),
        lang=lang,
        meta=_meta(k, lang, site, gateway),
        sections=sections,
    )
