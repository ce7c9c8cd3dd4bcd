"""Report text in English and Chinese, site-time formatting, and the KPI table with benchmarks.

Benchmarks (docs/review.md gives the sources): ANSI/ISA-18.2-2016 §16 (with IEC 62682:2022,
which adopts the same metrics) and EEMUA 191 (3rd ed., 2013). A figure with no published
benchmark says so instead of inventing one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.review.kpi import AlarmKpis

__all__ = ["Lang", "Row", "SiteTime", "duration", "kpi_rows", "t"]

Lang = Literal["en", "zh"]

_TEXT: Final[dict[str, tuple[str, str]]] = {
    "title_alarms": ("Alarm system performance", "报警系统性能评估"),
    "title_incident": ("Incident report", "事件复盘报告"),
    "title_tune": (
        "What-if tuning (evidence only; nothing is applied)",
        "阈值调优推演（仅供参考，不会自动应用）",
    ),
    "period": ("Period", "统计周期"),
    "figure": ("Figure", "指标"),
    "figures": ("Figures and their benchmarks", "指标与基准"),
    "value": ("Value", "数值"),
    "benchmark": ("Benchmark", "基准"),
    "verdict": ("Verdict", "评价"),
    "ok": ("ok", "达标"),
    "over": ("over", "超标"),
    "none": ("—", "—"),
    "no_benchmark": ("no published benchmark", "无公开基准"),
    "alarms": ("Alarms (raises)", "报警次数（触发）"),
    "per_10min": ("Average alarms per 10 min", "平均每10分钟报警数"),
    "per_day": ("Average alarms per day", "平均每天报警数"),
    "flood_share": (
        "10-min periods with > 10 alarms (floods)",
        "报警泛滥时段占比（10分钟内>10次）",
    ),
    "peak": ("Peak alarms in one 10-min period", "10分钟内最大报警数"),
    "chattering": ("Chattering alarms (≥ 3 raises in 60 s)", "振荡报警（60秒内≥3次）"),
    "fleeting": ("Fleeting alarms (condition < {s} s)", "瞬时报警（持续<{s}秒）"),
    "stale": ("Stale alarms (in the list > 24 h)", "陈旧报警（持续>24小时）"),
    "standing": ("Standing alarms now", "当前未清除报警"),
    "top10": ("Top-10 bad actors' share of all alarms", "前10个频发报警占比"),
    "prio2": ("Level 2 (critical) share", "二级（严重）报警占比"),
    "prio1": ("Level 1 (major) share", "一级（重要）报警占比"),
    "ack": ("Time to acknowledge p50 / p90 / p95", "确认时间 p50 / p90 / p95"),
    "clear": ("Time to clear p50 / p90 / p95", "清除时间 p50 / p90 / p95"),
    "bad_actors": ("Top-10 bad actors", "前10个频发报警"),
    "tag": ("Tag", "位号"),
    "alarm": ("Alarm", "报警类型"),
    "count": ("Count", "次数"),
    "share": ("Share", "占比"),
    "faults": ("Sensor faults per device", "各设备传感器故障"),
    "device": ("Device", "设备"),
    "fault": ("Faults", "故障"),
    "stuck": ("Stuck", "卡滞"),
    "lost": ("Device lost", "设备离线"),
    "plot_rate": ("Alarms per 10-min period", "每10分钟报警数"),
    "plot_actors": ("Top-10 bad actors", "前10个频发报警"),
    "plot_prio": ("Priority distribution", "报警等级分布"),
    "plot_ack": ("Time to acknowledge (s)", "确认时间（秒）"),
    "flood_line": ("flood threshold (10)", "泛滥阈值（10）"),
    "time": ("Time", "时间"),
    "timezone": ("Time zone", "时区"),
    "generated": ("Generated", "生成时间"),
    "incidents": ("Incidents", "事件列表"),
    "incident": ("Incident", "事件"),
    "opened": ("Opened", "开始"),
    "closed": ("Closed", "结束"),
    "trigger": ("Trigger", "触发"),
    "tags": ("Tags", "位号"),
    "samples": ("Samples", "采样数"),
    "timeline": ("Timeline", "时间线"),
    "event": ("Event", "事件"),
    "level": ("Level", "等级"),
    "who": ("Who", "操作人"),
    "since_raise": ("Since raise", "距触发"),
    "durations": ("Durations", "持续时间"),
    "above": ("Time above {limit} ({value})", "超过{limit}（{value}）时长"),
    "to_ack": ("Time to acknowledge", "确认用时"),
    "to_clear": ("Time to clear", "清除用时"),
    "peak_at": ("Peak", "峰值"),
    "early": ("Trend warnings before the limit", "超限前趋势预警"),
    "lead": ("Lead time", "提前量"),
    "health": ("Device health and data quality", "设备状态与数据质量"),
    "good": ("Good", "正常"),
    "bad": ("Not good", "异常"),
    "max_gap": ("Largest gap", "最大间隔"),
    "plots": ("Plots (limits drawn)", "曲线（含报警限）"),
    "candidate": ("Candidate", "候选"),
    "current": ("current", "当前"),
    "params": ("Parameters", "参数"),
    "raised": ("Alarms raised", "报警次数"),
    "chatter_removed": ("Chattering raises (removed)", "振荡报警（减少）"),
    "l1_delay": (
        "Level-1 crossings: later by (median / max), missed",
        "一级越限：延迟（中位/最大），漏报",
    ),
    "l2_delay": (
        "Level-2 crossings: later by (median / max), missed",
        "二级越限：延迟（中位/最大），漏报",
    ),
    "refused": ("refused: {why}", "拒绝：{why}"),
    "open": ("open", "进行中"),
}


def t(key: str, lang: Lang, **fields: object) -> str:
    """The text ``key`` in ``lang``, with ``{fields}`` filled in."""
    en, zh = _TEXT[key]
    return (zh if lang == "zh" else en).format(**fields)


class SiteTime:
    """Formats epoch ms in the site's time zone, always with its UTC offset (ISO 8601)."""

    def __init__(self, zone: str) -> None:
        """Raises ``ValueError`` naming ``review.timezone`` for an unknown zone."""
        try:
            self.zone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"review.timezone / --tz {zone!r} is not a known IANA time zone "
                "(e.g. Asia/Shanghai, UTC)"
            ) from exc
        self.name = zone

    def dt(self, ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, tz=self.zone)

    def offset(self, ms: int) -> str:
        """The zone's UTC offset at ``ms``: ``+08:00``."""
        return self.dt(ms).isoformat()[-6:] if self.dt(ms).utcoffset() else "+00:00"

    def fmt(self, ms: int, *, ms_digits: bool = False) -> str:
        return self.dt(ms).isoformat(timespec="milliseconds" if ms_digits else "seconds")

    def parse(self, label: str, text: str, *, end: bool) -> int:
        """``--from``/``--to``: ISO 8601; a time without offset is site time; a bare date as
        ``--to`` means the end of that day (exclusive bound: the next midnight)."""
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(
                f"{label} {text!r} is not an ISO 8601 time (e.g. 2026-12-01T08:00)"
            ) from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        ms = int(when.timestamp() * 1000)
        if end and len(text) == 10:
            ms = int((when + dt.timedelta(days=1)).timestamp() * 1000)
        return ms


def duration(ms: float) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``4.2 s``."""
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    value: str
    benchmark: str
    verdict: bool | None  # True within the benchmark, False beyond it, None: no benchmark


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def kpi_rows(k: AlarmKpis, lang: Lang) -> list[Row]:
    """The KPI table: each figure beside its benchmark and a verdict."""
    occ = sum(k.priority.values())
    p2 = k.priority.get(2, 0) / occ if occ else 0.0
    p1 = k.priority.get(1, 0) / occ if occ else 0.0
    nb = t("no_benchmark", lang)
    if lang == "zh":
        b_rate = "≈1 可接受，≈2 最大可管理（ISA-18.2 / EEMUA 191）"
        b_day = "≈150 可接受，≈300 最大可管理（ISA-18.2）"
        b_flood = "< 1 %（ISA-18.2）"
        b_peak = "≤ 10（ISA-18.2）"
        b_zero = "0（ISA-18.2）"
        b_stale = "每天 < 5（ISA-18.2）"
        b_stand = "< 10（EEMUA 191）"
        b_top = "< 1 %–5 %（ISA-18.2）"
        b_p2 = "≈5 %（三级制高级；ISA-18.2 / EEMUA 191）"
        b_p1 = "≈95 %（中≈15 % + 低≈80 %）"
    else:
        b_rate = "≈1 acceptable, ≈2 max manageable (ISA-18.2 / EEMUA 191)"
        b_day = "≈150 acceptable, ≈300 max manageable (ISA-18.2)"
        b_flood = "< 1 % (ISA-18.2)"
        b_peak = "≤ 10 (ISA-18.2)"
        b_zero = "0 (ISA-18.2)"
        b_stale = "< 5 on any day (ISA-18.2)"
        b_stand = "< 10 (EEMUA 191)"
        b_top = "< 1 %–5 % (ISA-18.2)"
        b_p2 = "≈5 % (high of 3 priorities; ISA-18.2 / EEMUA 191)"
        b_p1 = "≈95 % (medium ≈15 % + low ≈80 %)"

    def pcts(p: Mapping[int, int]) -> str:
        return " / ".join(duration(p[q]) for q in (50, 90, 95)) if p else t("none", lang)

    return [
        Row(t("alarms", lang), str(k.alarms), nb, None),
        Row(t("per_10min", lang), f"{k.per_10min:.2f}", b_rate, k.per_10min <= 2),
        Row(t("per_day", lang), f"{k.per_day:.0f}", b_day, k.per_day <= 300),
        Row(
            t("flood_share", lang),
            f"{_pct(k.flood_share)} ({k.flood_periods}/{k.periods})",
            b_flood,
            k.flood_share < 0.01,
        ),
        Row(t("peak", lang), str(k.peak), b_peak, k.peak <= 10),
        Row(
            t("chattering", lang),
            f"{k.chattering} ({k.chattering_raises})",
            b_zero,
            k.chattering == 0,
        ),
        Row(
            t("fleeting", lang, s=f"{k.fleeting_ms / 1000:g}"),
            str(k.fleeting),
            b_zero,
            k.fleeting == 0,
        ),
        Row(t("stale", lang), str(k.stale), b_stale, k.stale < 5),
        Row(t("standing", lang), str(k.standing), b_stand, k.standing < 10),
        Row(t("top10", lang), _pct(k.top10_share), b_top, k.top10_share <= 0.05),
        Row(t("prio2", lang), _pct(p2), b_p2, p2 <= 0.05 if occ else None),
        Row(t("prio1", lang), _pct(p1), b_p1, None),
        Row(t("ack", lang), pcts(k.ack_ms), nb, None),
        Row(t("clear", lang), pcts(k.clear_ms), nb, None),
    ]
