"""Rendering shared by the reports: self-contained HTML (escaped text, PNG plots embedded as
base64) and rich tables for the terminal.

Plots use matplotlib's Agg backend (no display needed). Chinese plot labels need a CJK font
(Debian: fonts-wqy-microhei); without one, plot labels fall back to English so that no glyph is
missing, while the page text stays in the chosen language.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from agent.review.text import Lang, Row, t

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "figure",
    "html_page",
    "html_table",
    "img",
    "kpi_html_table",
    "plot_lang",
    "print_kpi_table",
    "print_table",
]

_CJK_FONTS = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC")

_CSS = """
body{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC",system-ui,sans-serif;margin:2em;
color:#1d1d1f;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#116611}.over{color:#b00020;font-weight:bold}.missed{color:#b00020;font-weight:bold}
.meta{color:#555}img{max-width:100%;margin:.5em 0;border:1px solid #eee}
"""


@cache
def _cjk_font() -> str | None:
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in _CJK_FONTS if n in names), None)


def plot_lang(lang: Lang) -> Lang:
    """The language plot labels can be drawn in (English when no CJK font is installed)."""
    return lang if lang == "en" or _cjk_font() is not None else "en"


def figure(width: float = 9.0, height: float = 3.2) -> Figure:
    """A new Agg figure (not registered with pyplot: nothing global, nothing to close)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    font = _cjk_font()
    if font is not None:
        matplotlib.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
    matplotlib.rcParams["axes.unicode_minus"] = False
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def img(fig: Figure, alt: str) -> str:
    """The figure as an ``<img>`` with the PNG inline (base64)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    classes: Sequence[Sequence[str]] | None = None,
) -> str:
    """A table; every cell is escaped. ``classes[i][j]`` styles cell (i, j) when given."""
    out = ["<table><thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        out.append("<tr>")
        for j, cell in enumerate(row):
            cls = classes[i][j] if classes is not None and classes[i][j] else ""
            attr = f' class="{cls}"' if cls else ""
            out.append(f"<td{attr}>{html.escape(str(cell))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kpi_html_table(rows: Sequence[Row], lang: Lang) -> str:
    header = [t(k, lang) for k in ("figure", "value", "benchmark", "verdict")]
    cells, classes = [], []
    for r in rows:
        verdict = "" if r.verdict is None else t("ok" if r.verdict else "over", lang)
        cells.append([r.label, r.value, r.benchmark, verdict or t("none", lang)])
        cls = "" if r.verdict is None else ("ok" if r.verdict else "over")
        classes.append(["", "num", "", cls])
    return html_table(header, cells, classes=classes)


def html_page(
    *, title: str, lang: Lang, meta: Sequence[str], sections: Sequence[tuple[str, str]]
) -> str:
    """A complete, self-contained page: ``sections`` are (heading, already-built HTML)."""
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="meta">{html.escape(m)}</p>' for m in meta]
    for heading, body in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A rich table on stdout (plain when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, no_wrap=i == 0)  # the first column is what people copy (ids, tags)
    for row in rows:
        table.add_row(*(c if not isinstance(c, str | int | float) else str(c) for c in row))
    # Piped or redirected output is not cut to 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def print_kpi_table(title: str, rows: Sequence[Row], lang: Lang) -> None:
    from rich.text import Text

    header = [t(k, lang) for k in ("figure", "value", "benchmark", "verdict")]
    body = []
    for r in rows:
        if r.verdict is None:
            verdict = Text(t("none", lang))
        else:
            verdict = Text(
                t("ok" if r.verdict else "over", lang), style="green" if r.verdict else "bold red"
            )
        body.append([r.label, r.value, r.benchmark, verdict])
    print_table(title, header, body)
