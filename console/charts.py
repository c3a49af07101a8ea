"""Charts drawn on the server as SVG: the dashboard shows them inline and the PDF report
carries the same drawings. Why SVG and not a JavaScript charting library: no script to
vendor or allow in the Content-Security-Policy, nothing to load from anywhere, the same
picture in the browser, the HTML download and the PDF (WeasyPrint draws SVG), and a figure
on the page is the figure in the database, with its number written beside its bar."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape

from markupsafe import Markup

PALETTE = ("#2f6db5", "#d9822b", "#3a9d5d", "#c23b3b", "#7a5bb5", "#8c8c8c", "#1f9aa8", "#b5a02f")
FONT = "font-family=\"'WenQuanYi Zen Hei','Noto Sans CJK SC','WenQuanYi Micro Hei',sans-serif\""


def _svg(width: int, height: int, name: str, title: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT} font-size="12">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>")


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bars(name: str, title: str, items: Sequence[tuple[str, float]], *, width: int = 560, unit: str = "",
         colour: str = PALETTE[0], empty: str = "—") -> Markup:
    """Horizontal bars, one per item, largest scale = the largest value; the value is written
    at the end of each bar."""
    row, label_w, value_w = 22, 150, 56
    height = max(1, len(items)) * row + 8
    top = max((v for _, v in items), default=0) or 1
    plot = width - label_w - value_w
    body = []
    if not items:
        body.append(f'<text x="{label_w}" y="18" fill="#666">{escape(empty)}</text>')
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(1.0, plot * value / top) if value else 0
        body.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label[:14])}</text>')
        body.append(f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
                    f'fill="{colour}"><title>{escape(label)}: {_fmt(value)}{escape(unit)}</title></rect>')
        body.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{_fmt(value)}{escape(unit)}</text>')
    return _svg(width, height, name, title, body)


def lines(name: str, title: str, days: Sequence[date], series: Sequence[tuple[str, Sequence[int]]], *,
          width: int = 760, height: int = 220) -> Markup:
    """Daily counts as lines (one per series) with a y axis at 0, half and the top, a date
    every few days and a legend."""
    left, right, top_pad, bottom = 40, 10, 24, 36
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = max((v for _, values in series for v in values), default=0) or 1
    n = max(1, len(days) - 1)
    body = []
    for frac in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - frac)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(round(top * frac, 1))}'
                    f"</text>")
    step = max(1, len(days) // 6)
    for i in range(0, len(days), step):
        x = left + plot_w * i / n
        body.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="#555">'
                    f"{days[i].month}/{days[i].day}</text>")
    for k, (label, values) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{left + plot_w * i / n:.1f},{top_pad + plot_h * (1 - v / top):.1f}"
                          for i, v in enumerate(values))
        body.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="1.8" points="{points}">'
                    f"<title>{escape(label)}</title></polyline>")
        lx = left + 8 + k * 110
        body.append(f'<rect x="{lx}" y="6" width="12" height="10" fill="{colour}"/>'
                    f'<text x="{lx + 16}" y="15">{escape(label)}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{top_pad}" y2="{top_pad + plot_h}" stroke="#999"/>')
    return _svg(width, height, name, title, body)


def shares(name: str, title: str, items: Sequence[tuple[str, int]], *, width: int = 560) -> Markup:
    """One bar split in proportion to each item, with a legend giving count and share."""
    total = sum(v for _, v in items)
    bar_h, legend_row = 26, 20
    height = bar_h + 12 + max(1, len(items)) * legend_row
    body, x = [], 0.0
    for k, (label, value) in enumerate(items):
        colour = PALETTE[k % len(PALETTE)]
        w = width * value / total if total else 0
        share = f"{100 * value / total:.1f}%" if total else "—"
        body.append(f'<rect class="bar" x="{x:.1f}" y="0" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                    f"<title>{escape(label)}: {value} ({share})</title></rect>")
        x += w
        y = bar_h + 12 + k * legend_row
        body.append(f'<rect x="0" y="{y}" width="12" height="12" fill="{colour}"/>'
                    f'<text x="18" y="{y + 11}">{escape(label)} {value} · {share}</text>')
    if not items:
        body.append(f'<rect x="0" y="0" width="{width}" height="{bar_h}" fill="#eee"/>')
    return _svg(width, height, name, title, body)
