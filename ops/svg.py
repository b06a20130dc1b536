"""Small charts drawn by the server as inline SVG (bars, sparklines): no JavaScript, no CDN.

Every label is escaped, so the markup is well-formed XML whatever the data says."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

BAR_COLOUR = "#79aec8"
LINE_COLOUR = "#417690"
LABEL_HEIGHT = 12


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def bars(
    points: Sequence[tuple[str, float]],
    *,
    width: int = 480,
    height: int = 80,
    title: str = "",
    label_every: int = 0,
) -> SafeString:
    """Vertical bars, one per (label, value); each bar's tooltip names its label and value.
    With ``label_every`` n, every n-th label is written under its bar."""
    peak = max([0.0, *(float(v) for _, v in points)]) or 1.0
    step = width / max(1, len(points))
    chart = height - LABEL_HEIGHT if label_every else height
    parts = []
    for i, (label, value) in enumerate(points):
        h = float(value) / peak * (chart - 2)
        parts.append(
            f'<rect x="{_number(i * step + 1)}" y="{_number(chart - h)}" '
            f'width="{_number(max(1.0, step - 2))}" height="{_number(h)}" fill="{BAR_COLOUR}">'
            f"<title>{escape(label)}: {escape(value)}</title></rect>"
        )
        if label_every and i % label_every == 0:
            parts.append(
                f'<text x="{_number(i * step + 1)}" y="{height - 2}" font-size="9" '
                f'fill="{LINE_COLOUR}">{escape(label)}</text>'
            )
    return _svg(width, height, title, "".join(parts))


def sparkline(
    values: Sequence[float], *, width: int = 240, height: int = 40, title: str = ""
) -> SafeString:
    """A line through ``values`` (left = oldest), scaled to the largest."""
    peak = max([0.0, *(float(v) for v in values)]) or 1.0
    step = width / max(1, len(values) - 1)
    coords = " ".join(
        f"{_number(i * step)},{_number(height - 1 - float(v) / peak * (height - 2))}"
        for i, v in enumerate(values)
    )
    line = f'<polyline points="{coords}" fill="none" stroke="{LINE_COLOUR}" stroke-width="1.5"/>'
    return _svg(width, height, title, line if values else "")


def _svg(width: int, height: int, title: str, body: str) -> SafeString:
    return mark_safe(  # noqa: S308 (every interpolated text is escaped above)
        f'<svg xmlns="http://www.w3.org/2000/svg" class="af-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>{body}</svg>'
    )
