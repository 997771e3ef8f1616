"""``--format html``: one self-contained page per report, with the chart a reader expects.

Inline SVG and CSS only (no script, no CDN, no font), so the file opens offline and can be
mailed: a cohort heat map for retention, stacked bars for lifecycle (dormant below the
axis, as growth accounting draws it), an R x F grid for RFM. The data follows as a table.
Every text is escaped.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} p.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin-top:16px} th,td{padding:3px 8px;border:1px solid #ddd;
text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left}
svg text{font:11px system-ui,sans-serif;fill:#333} .legend span{display:inline-block;
margin-right:14px} .legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""
LIFECYCLE_COLOURS = {
    "new": "#2e7d32",
    "returning": "#1565c0",
    "resurrecting": "#f9a825",
    "dormant": "#c62828",
}


def _page(title: str, subtitle: str, chart: str, table: str, legend: str = "") -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)}</p>{legend}{chart}{table}"
        "</body></html>\n"
    )


def _table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_text(r[c]))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def _svg(width: float, height: float, parts: list[str]) -> str:
    body = "".join(parts)
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>{body}</svg>"


def _heat(share: float) -> str:
    """White to dark blue by share 0..1."""
    light = 97 - int(62 * max(0.0, min(1.0, share)))
    return f"hsl(212,70%,{light}%)"


def retention_page(rows: list[dict[str, Any]], q: Any) -> str:
    cohorts = sorted({r["cohort"] for r in rows})
    ks = sorted({r["k"] for r in rows})
    cell, left, top = 46, 110, 28
    parts = []
    for i, k in enumerate(ks):
        parts.append(
            f"<text x='{left + i * cell + cell / 2}' y='18' text-anchor='middle'>{k}</text>"
        )
    for j, c in enumerate(cohorts):
        y = top + j * 24
        parts.append(f"<text x='4' y='{y + 16}'>{escape(_text(c))}</text>")
        for r in (r for r in rows if r["cohort"] == c):
            i = ks.index(r["k"])
            share = r["retained"] / r["size"] if r["size"] else 0.0
            fill = _heat(share) if r["complete"] else "#eeeeee"
            label = f"{share:.0%}" if r["size"] else ""
            tip = f"{_text(c)} k={r['k']}: {r['retained']} of {r['size']}"
            if not r["complete"]:
                tip += " (period not over)"
            x = left + i * cell
            parts.append(
                f"<g><title>{escape(tip)}</title><rect x='{x}' y='{y}' width='{cell - 2}' "
                f"height='22' fill='{fill}'/><text x='{x + cell / 2 - 1}' y='{y + 15}' "
                f"text-anchor='middle'>{label}</text></g>"
            )
    width, height = left + len(ks) * cell + 10, top + len(cohorts) * 24 + 10
    chart = _svg(width, height, parts)
    subtitle = (
        f"cohort event {q.cohort_event}, return event {q.return_event}, {q.lo}..{q.hi}, "
        f"{q.cal.period}s in {q.cal.tz}, {q.mode}; columns are k; grey: period not over"
    )
    cols = ["cohort", "size", "k", "retained", "complete"]
    return _page("Retention", subtitle, chart, _table(cols, rows))


def lifecycle_page(rows: list[dict[str, Any]], cal: Any) -> str:
    up = ("new", "returning", "resurrecting")
    peak = max([sum(r[s] for s in up) for r in rows] + [r["dormant"] for r in rows] + [1])
    bar, gap, half, left = 28, 8, 140, 50
    axis = 20 + half
    parts = [
        f"<line x1='{left}' x2='{left + len(rows) * (bar + gap)}' y1='{axis}' y2='{axis}' "
        "stroke='#999'/>"
    ]
    for i, r in enumerate(rows):
        x = left + i * (bar + gap)
        y = axis
        for stage in up:
            h = half * r[stage] / peak
            y -= h
            parts.append(_bar(x, y, bar, h, stage, r))
        parts.append(_bar(x, axis, bar, half * r["dormant"] / peak, "dormant", r))
        if len(rows) <= 40 or i % max(1, len(rows) // 20) == 0:
            parts.append(
                f"<text x='{x}' y='{axis + half + 16}' "
                f"transform='rotate(45 {x} {axis + half + 16})'>"
                f"{escape(_text(r['period']))}</text>"
            )
    parts.append(f"<text x='4' y='24'>{peak}</text><text x='4' y='{axis + half}'>-{peak}</text>")
    width, height = left + len(rows) * (bar + gap) + 60, axis + half + 90
    chart = _svg(width, height, parts)
    legend = (
        "<div class='legend'>"
        + "".join(
            f"<span><i style='background:{c}'></i>{s}</span>" for s, c in LIFECYCLE_COLOURS.items()
        )
        + "</div>"
    )
    subtitle = f"{cal.period}s in {cal.tz}; dormant drawn below the axis"
    cols = ["period", "new", "returning", "resurrecting", "dormant"]
    return _page("Lifecycle", subtitle, chart, _table(cols, rows), legend)


def _bar(x: float, y: float, w: int, h: float, stage: str, r: dict[str, Any]) -> str:
    tip = f"{_text(r['period'])} {stage}: {r[stage]}"
    return (
        f"<rect x='{x}' y='{y:.1f}' width='{w}' height='{h:.1f}' "
        f"fill='{LIFECYCLE_COLOURS[stage]}'><title>{escape(tip)}</title></rect>"
    )


def rfm_page(rows: list[dict[str, Any]], rules: Any) -> str:
    grid = Counter((row["r"], row["f"]) for row in rows)
    segment_of: dict[tuple[int, int], Counter[str]] = {}
    for row in rows:
        segment_of.setdefault((row["r"], row["f"]), Counter())[row["segment"]] += 1
    peak = max(grid.values(), default=1)
    cell, left, top = 92, 40, 20
    parts = []
    for f in range(5, 0, -1):
        y = top + (5 - f) * cell
        parts.append(f"<text x='4' y='{y + cell / 2}'>F{f}</text>")
        for r in range(1, 6):
            x = left + (r - 1) * cell
            n = grid.get((r, f), 0)
            seg = segment_of.get((r, f), Counter()).most_common(1)
            name = seg[0][0] if seg else ""
            parts.append(
                f"<g><title>{escape(f'R{r} F{f}: {n} persons {name}')}</title>"
                f"<rect x='{x}' y='{y}' width='{cell - 2}' height='{cell - 2}' "
                f"fill='{_heat(n / peak) if n else '#f6f6f6'}'/>"
                f"<text x='{x + 6}' y='{y + 18}'>{n}</text>"
                f"<text x='{x + 6}' y='{y + cell - 10}'>{escape(name)}</text></g>"
            )
    for r in range(1, 6):
        parts.append(
            f"<text x='{left + (r - 1) * cell + cell / 2}' y='{top + 5 * cell + 16}'>R{r}</text>"
        )
    size = left + 5 * cell + 10
    chart = _svg(size, size + 20, parts)
    counts = Counter(row["segment"] for row in rows)
    summary = [{"segment": s, "persons": counts.get(s, 0)} for s in rules.names()]
    table = _table(["segment", "persons"], summary) + _table(
        ["person_id", "recency_days", "frequency", "monetary", "r", "f", "m", "segment"], rows
    )
    subtitle = f"{len(rows)} paying persons; cells: persons by recency (R) and frequency (F) score"
    return _page("RFM segments", subtitle, chart, table)


def page(kind: str, rows: list[dict[str, Any]], meta: Any) -> str:
    if kind == "retention":
        return retention_page(rows, meta)
    if kind == "lifecycle":
        return lifecycle_page(rows, meta)
    return rfm_page(rows, meta)
