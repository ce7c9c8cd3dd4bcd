"""Chinese first, English available; times in the site's time zone with the UTC offset.

Language: ``?lang=`` (kept in the session) > the browser's ``Accept-Language`` (the first of
zh/en by q) > ``[console].language``. Every string a page shows is in :data:`TEXT`, both
languages; a missing key is a KeyError in the tests, never a blank on the screen.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Final

__all__ = ["TEXT", "SiteClock", "negotiate"]

LANGS: Final = ("zh", "en")

TEXT: Final[dict[str, dict[str, str]]] = {
    "zh": {
        "title": "SafeEdge 现场监控", "grade": "级别", "board": "报警看板", "live": "实时数据",
        "health": "运行状态",
        "l2": "二级", "l1": "一级", "fault": "故障", "tag": "位号", "alarm": "报警",
        "since": "发生时间", "value": "当前值", "limit": "限值", "acked": "已确认",
        "unacked": "未确认", "latched": "已复位待确认", "ack": "确认", "shelve": "搁置",
        "unshelve": "取消搁置", "reason": "原因（必填）", "minutes": "分钟", "comment": "备注",
        "no_alarms": "当前无报警", "history": "本班记录", "time": "时间", "event": "事件",
        "who": "操作人", "shelved": "已搁置", "until": "至", "login": "登录", "logout": "退出",
        "user": "用户名", "password": "密码", "mute": "静音", "unmute": "取消静音",
        "device": "设备", "unit": "单位", "quality": "质量", "limits": "限值", "trend": "趋势",
        "good": "正常", "bad": "无效", "online": "在线", "offline": "离线", "uplink": "上行链路",
        "backlog": "缓存积压", "config_hash": "配置指纹", "degraded": "降级原因", "none": "无",
        "connected": "已连接", "disconnected": "已断开", "disabled": "未启用", "polls": "轮询次数",
        "login_failed": "用户名或密码错误", "too_many": "尝试次数过多，请稍后再试",
        "viewer": "只读", "operator": "操作员", "anonymous": "未登录（只读）",
        "raise": "报警", "escalate": "升级", "deescalate": "降级", "clear": "清除",
        "return": "复位", "ack_ev": "确认", "shelve_ev": "搁置", "unshelve_ev": "取消搁置",
        "local": "本地", "platform": "平台", "updated": "更新于", "lang_other": "English",
        "high": "高限", "low": "低限", "roc": "变化率", "trend_high": "趋势高",
        "trend_low": "趋势低", "stuck": "数值不变",
    },
    "en": {
        "title": "SafeEdge site console", "grade": "Level", "board": "Alarm board",
        "live": "Live values",
        "health": "Health", "l2": "Level 2", "l1": "Level 1", "fault": "Fault", "tag": "Tag",
        "alarm": "Alarm", "since": "Since", "value": "Value", "limit": "Limit",
        "acked": "Acknowledged", "unacked": "Unacknowledged", "latched": "Returned, not acked",
        "ack": "Acknowledge", "shelve": "Shelve", "unshelve": "Unshelve",
        "reason": "Reason (required)", "minutes": "min", "comment": "Comment",
        "no_alarms": "No active alarms", "history": "Shift history", "time": "Time",
        "event": "Event", "who": "By", "shelved": "Shelved", "until": "until", "login": "Log in",
        "logout": "Log out", "user": "User", "password": "Password", "mute": "Mute",
        "unmute": "Unmute", "device": "Device", "unit": "Unit", "quality": "Quality",
        "limits": "Limits", "trend": "Trend", "good": "good", "bad": "bad", "online": "online",
        "offline": "offline", "uplink": "Uplink", "backlog": "Buffer backlog",
        "config_hash": "Config hash", "degraded": "Degraded", "none": "none",
        "connected": "connected", "disconnected": "disconnected", "disabled": "disabled",
        "polls": "Polls", "login_failed": "Wrong user name or password",
        "too_many": "Too many attempts, try again later", "viewer": "viewer",
        "operator": "operator", "anonymous": "not logged in (read-only)", "raise": "raise",
        "escalate": "escalate", "deescalate": "de-escalate", "clear": "clear",
        "return": "return", "ack_ev": "ack", "shelve_ev": "shelve", "unshelve_ev": "unshelve",
        "local": "local", "platform": "platform", "updated": "updated", "lang_other": "中文",
        "high": "high", "low": "low", "roc": "rate", "trend_high": "trend high",
        "trend_low": "trend low", "stuck": "stuck",
    },
}  # fmt: skip


def negotiate(accept_language: str | None, chosen: str | None, default: str) -> str:
    """The page language (see module doc); always one of :data:`LANGS`."""
    if chosen in LANGS:
        return chosen
    best: tuple[float, int, str] | None = None
    for pos, part in enumerate((accept_language or "").split(",")[:20]):
        bits = part.strip().split(";")
        code = bits[0].strip().lower()[:2]
        q = 1.0
        for b in bits[1:]:
            if b.strip().startswith("q="):
                try:
                    q = float(b.strip()[2:])
                except ValueError:
                    q = 0.0
        if code in LANGS and q > 0 and (best is None or (q, -pos) > (best[0], best[1])):
            best = (q, -pos, code)
    return best[2] if best is not None else default


class SiteClock:
    """Formats UTC epoch ms in the site's zone: ``2026-12-01 17:38:02 (UTC+08:00)``."""

    def __init__(self, zone: str) -> None:
        self.zone = zoneinfo.ZoneInfo(zone)

    def _at(self, ts_ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).astimezone(self.zone)

    def offset(self, ts_ms: int) -> str:
        off = self._at(ts_ms).utcoffset() or dt.timedelta(0)
        sign = "-" if off < dt.timedelta(0) else "+"
        minutes = abs(int(off.total_seconds())) // 60
        return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def full(self, ts_ms: int) -> str:
        return f"{self._at(ts_ms):%Y-%m-%d %H:%M:%S} ({self.offset(ts_ms)})"

    def short(self, ts_ms: int) -> str:
        return f"{self._at(ts_ms):%m-%d %H:%M:%S}"
