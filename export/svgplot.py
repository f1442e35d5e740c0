"""Small inline-SVG charts for the eval report.

Why not matplotlib: `nordlys eval` runs on the daemon's own install (anyone sorting photos should
be able to measure the model on them), and two line charts do not justify a plotting library.
Inline SVG also scales with the page, so its labels stay readable at any width, and the report
is a single HTML file plus thumbnails.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

WIDTH, HEIGHT = 440, 330  # user units of the viewBox; the page scales it
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 52, 48  # margins: title and legend above, tick labels and axis titles
COLOURS = {"aurora": "#1a9c4a", "other": "#3b6fb6", "threshold": "#d62728", "grey": "#888888"}


@dataclass
class Series:
    """One polyline; `step` draws a histogram's outline (each y holds until the next x)."""

    xs: Sequence[float]
    ys: Sequence[float]
    label: str
    colour: str
    dash: str = ""
    step: bool = False


@dataclass
class Chart:
    title: str
    xlabel: str
    ylabel: str
    y_max: float = 1.0
    log_y: bool = False  # log10(1 + y), for counts where a few rare scores matter
    series: list[Series] = field(default_factory=list)
    points: list[tuple[float, float, str, str]] = field(default_factory=list)  # x, y, label, colour
    vlines: list[tuple[float, str, str]] = field(default_factory=list)  # x, label, colour


def render(chart: Chart, *, description: str) -> str:
    """The chart as an <svg> element with a <title> (its accessible name) and a legend."""
    y_top = _y_value(chart, chart.y_max) or 1.0

    def px(x: float, y: float) -> str:
        gx = LEFT + x * (WIDTH - LEFT - RIGHT)
        gy = HEIGHT - BOTTOM - (_y_value(chart, y) / y_top) * (HEIGHT - TOP - BOTTOM)
        return f"{gx:.1f},{gy:.1f}"

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(description)}</title>',
             f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(chart.title)}</text>']
    parts += _axes(chart, px)
    for s in chart.series:
        coords = []
        for i, (x, y) in enumerate(zip(s.xs, s.ys)):
            if s.step and i:
                coords.append(px(x, s.ys[i - 1]))
            coords.append(px(x, y))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(f'<polyline fill="none" stroke="{s.colour}" stroke-width="2"{dash} points="{" ".join(coords)}"/>')
    for x, label, colour in chart.vlines:
        parts.append(f'<polyline stroke="{colour}" stroke-dasharray="5 3" stroke-width="1.5" '
                     f'points="{px(x, 0)} {px(x, chart.y_max)}"/>')
    for x, y, label, colour in chart.points:
        cx, cy = px(x, y).split(",")
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="5" fill="{colour}"/>')
    parts += _legend([(s.label, s.colour) for s in chart.series]
                     + [(label, colour) for _, label, colour in chart.vlines]
                     + [(label, colour) for _, _, label, colour in chart.points])
    parts.append("</svg>")
    return "".join(parts)


def _y_value(chart: Chart, y: float) -> float:
    return math.log10(1.0 + y) if chart.log_y else y


def _axes(chart: Chart, px) -> list[str]:  # noqa: ANN001 - the closure above
    x0, y0 = px(0, 0).split(",")
    x1, _ = px(1, 0).split(",")
    _, y1 = px(0, chart.y_max).split(",")
    out = [f'<polyline fill="none" stroke="#333" points="{x0},{y1} {x0},{y0} {x1},{y0}"/>']
    for i in range(6):
        x = i / 5
        tx, ty = px(x, 0).split(",")
        out.append(f'<text x="{tx}" y="{float(ty) + 17}" text-anchor="middle" font-size="12">{x:.1f}</text>')
    for y in _y_ticks(chart):
        tx, ty = px(0, y).split(",")
        label = f"{y:.1f}" if chart.y_max <= 1 else f"{y:.0f}"
        out.append(f'<text x="{float(tx) - 6}" y="{float(ty) + 4}" text-anchor="end" font-size="12">{label}</text>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="13">'
               f'{html.escape(chart.xlabel)}</text>')
    out.append(f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
               f'font-size="13">{html.escape(chart.ylabel)}</text>')
    return out


def _y_ticks(chart: Chart) -> list[float]:
    if chart.y_max <= 1:
        return [i / 5 for i in range(6)]
    if chart.log_y:
        ticks, t = [0.0], 1.0
        while t <= chart.y_max:
            ticks.append(t)
            t *= 10
        return ticks
    step = max(1, math.ceil(chart.y_max / 5))
    return [float(t) for t in range(0, int(chart.y_max) + 1, step)]


def _legend(entries: list[tuple[str, str]]) -> list[str]:
    """One row between the title and the plot, so it never covers a curve."""
    out, x = [], float(LEFT)
    for label, colour in entries:
        out.append(f'<rect x="{x:.0f}" y="29" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{x + 16:.0f}" y="39" font-size="12">{html.escape(label)}</text>')
        x += 16 + 7 * len(label) + 18
    return out
