"""`report.html`: one self-contained page (inline SVG plots and CSS, no script, no fetch).

Plots are drawn here as SVG rather than with a plotting library: the report has a handful of
bar and line charts, and drawing them takes less code than a dependency would pull in.
"""

from __future__ import annotations

from html import escape
from typing import Any

W, H = 720, 220
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{color:#666}.warn{color:#a40}svg{display:block;margin:6px 0}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    magnitude = 10.0 ** (len(str(int(v))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def line_chart(
    title: str, labels: list[str], series: list[tuple[str, list[float]]], fmt: Any = str
) -> str:
    """A line chart of one or more series over the same labelled x positions."""
    top = _nice_max(max((max(v, default=0) for _, v in series), default=0))
    n = max(len(labels), 1)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(i: int) -> float:
        return PAD_L + (pw * i / (n - 1) if n > 1 else pw / 2)

    def y(v: float) -> float:
        return PAD_T + ph * (1 - v / top)

    parts = [f'<svg role="img" aria-label="{escape(title)}" width="{W}" height="{H}">']
    for k in range(5):
        v = top * k / 4
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{escape(fmt(v))}</text>'
        )
    ticks = sorted({0, n - 1, *range(0, n, max(1, n // 6))})
    for i in ticks:
        parts.append(
            f'<text x="{x(i):.1f}" y="{H - PAD_B + 16}" text-anchor="middle">'
            f"{escape(labels[i]) if labels else ''}</text>"
        )
    for s, (name, values) in enumerate(series):
        colour = COLOURS[s % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        if len(values) == 1:  # one point in time: a column, not a lone dot
            left, width = x(0) - 20 + 24 * s, 20
            parts.append(
                f'<rect x="{left:.1f}" y="{y(values[0]):.1f}" width="{width}" '
                f'height="{PAD_T + ph - y(values[0]):.1f}" fill="{colour}"/>'
            )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
            f'<rect x="{PAD_L + 10 + 120 * s}" y="{H - 14}" width="10" height="10" '
            f'fill="{colour}"/><text x="{PAD_L + 24 + 120 * s}" y="{H - 5}">{escape(name)}</text>'
        )
    parts.append(
        f'<line x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#999"/></svg>'
    )
    return "".join(parts)


def bar_chart(title: str, items: list[tuple[str, float]], fmt: Any = str) -> str:
    """Horizontal bars, one per item, labelled with their value."""
    row = 22
    height = PAD_T + row * max(len(items), 1) + 8
    top = _nice_max(max((v for _, v in items), default=0))
    left, pw = 140, W - 140 - 120
    parts = [f'<svg role="img" aria-label="{escape(title)}" width="{W}" height="{height}">']
    for i, (label, value) in enumerate(items):
        yy = PAD_T + row * i
        width = pw * value / top if top else 0
        parts.append(
            f'<text x="{left - 8}" y="{yy + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left}" y="{yy + 2}" width="{max(width, 1):.1f}" height="{row - 6}" '
            f'fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{left + width + 6:.1f}" y="{yy + 14}">{escape(fmt(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def table(head: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return '<p class="note">nothing in these logs</p>'
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        out += ["<tr>", *(f"<td>{escape(str(c))}</td>" for c in r), "</tr>"]
    out.append("</table>")
    return "".join(out)


def _over_time(src: dict[str, Any]) -> str:
    ts = src["timeseries"]
    points = ts["points"]
    labels = [p["t"][5:16].replace("T", " ") for p in points]
    return (
        f"<h2>Over time (per {escape(str(ts['resolution']))})</h2>"
        + line_chart(
            "requests and errors over time",
            labels,
            [
                ("requests", [p["requests"] for p in points]),
                ("errors (5xx)", [p["errors"] for p in points]),
            ],
            lambda v: f"{v:g}",
        )
        + line_chart(
            "bytes over time", labels, [("bytes", [p["bytes"] for p in points])], human_bytes
        )
    )


def _traffic(src: dict[str, Any]) -> str:
    fams = src["families"]
    ranked = sorted(fams.items(), key=lambda kv: -kv[1]["requests"])
    out = ["<h2>Route families</h2>"]
    out.append(
        bar_chart(
            "requests by route family",
            [(f, g["requests"]) for f, g in ranked],
            lambda v: f"{v:g}",
        )
    )
    out.append(
        table(
            ["family", "requests", "bytes", "5xx", "p50 ms", "p95 ms", "p99 ms"],
            [
                [f, g["requests"], human_bytes(g["bytes"]), g["errors"]]
                + [_ms(g["latency_ms"][p]) for p in ("p50", "p95", "p99")]
                for f, g in ranked
            ],
        )
    )
    out.append("<h2>Clients</h2>")
    out.append(
        bar_chart(
            "requests by client kind",
            [(k, c["requests"]) for k, c in src["clients"].items()],
            lambda v: f"{v:g}",
        )
    )
    out.append("<h2>Status codes</h2>")
    out.append(table(["status", "requests"], [[k, v] for k, v in src["status"].items()]))
    u = src["unavailable"]
    out.append(f"<p>503: {u['503']}, 504: {u['504']}, share {_pct(u['share'])}</p>")
    return "".join(out)


def _caching(src: dict[str, Any]) -> str:
    out = ["<h2>Cache tiers</h2>"]
    tiers = src["tiers"]
    if not tiers:
        return out[0] + '<p class="note">no cache status in these logs</p>'
    out.append(
        bar_chart(
            "hit ratio per tier",
            [(name, t["hit_ratio"] or 0.0) for name, t in tiers.items()],
            lambda v: _pct(v),
        )
    )
    rows = []
    for name, t in tiers.items():
        for fam, f in t["by_family"].items():
            counts = ", ".join(f"{k} {v}" for k, v in sorted(f["counts"].items()))
            rows.append([name, fam, _pct(f["hit_ratio"]), counts])
    out.append(table(["tier", "family", "hit ratio", "answers"], rows))
    lat = src["latency_by_tier"]
    out.append(
        table(
            ["answered by", "requests", "p50 ms", "p95 ms", "p99 ms"],
            [
                [k, v["requests"], *(_ms(v[p]) for p in ("p50", "p95", "p99"))]
                for k, v in lat.items()
            ],
        )
    )
    replay = src.get("cache_replay")
    if replay and replay["sizes"]:
        sizes = replay["sizes"]
        out.append("<h2>What a larger cache would do (LRU replay)</h2>")
        out.append(
            line_chart(
                "hit ratio by cache capacity",
                [human_bytes(s["capacity_bytes"]) for s in sizes],
                [("LRU hit ratio", [s["hit_ratio"] or 0.0 for s in sizes])],
                _pct,
            )
        )
        out.append(
            f'<p class="note">{replay["requests"]} cacheable requests replayed '
            f"(sampling rate {replay['sampling_rate']:g}); hit ratio nginx reported: "
            f"{_pct(replay['observed_hit_ratio'])}</p>"
        )
    return "".join(out)


def _images(src: dict[str, Any]) -> str:
    top = src.get("top_images")
    if top is None:
        return '<h2>Images</h2><p class="note">per-image figures need nginx\'s log</p>'
    head = ["image", "study", "requests", "cold renders", "bytes"]

    def rows(items: list[dict[str, Any]]) -> list[list[Any]]:
        return [
            [r["image"], r["study"] or "–", r["requests"], r["cold"], human_bytes(r["bytes"])]
            for r in items
        ]

    out = ["<h2>Top images by requests</h2>", table(head, rows(top["by_requests"]))]
    out += ["<h2>Top images by cold renders</h2>", table(head, rows(top["by_cold"]))]
    if top["studies"] is not None:
        out.append("<h2>Top studies</h2>")
        out.append(
            table(
                ["study", "requests", "cold renders", "bytes"],
                [
                    [s["study"], s["requests"], s["cold"], human_bytes(s["bytes"])]
                    for s in top["studies"]
                ],
            )
        )
    ws = src["working_set"]
    out.append("<h2>Working set</h2>")
    hours = ws["distinct_per_hour"]
    out.append(
        line_chart(
            "distinct cacheable URLs per hour",
            [h["hour"][5:13].replace("T", " ") + "h" for h in hours],
            [("distinct URLs", [h["distinct"] for h in hours])],
            lambda v: f"{v:g}",
        )
    )
    out.append(
        table(
            ["share of cacheable requests", "bytes to hold the URLs that answer it"],
            [[_pct(b["share"]), human_bytes(b["bytes"])] for b in ws["bytes_for_top"]],
        )
    )
    return "".join(out)


def render(report: dict[str, Any]) -> str:
    """The page for a `report.json` document."""
    inp = report["input"]
    body = ["<h1>idrserve usage report</h1>"]
    body.append(
        f'<p class="note">{len(inp["files"])} file(s), {inp["lines"]} lines, '
        f"{inp['requests']} requests read; generated {escape(report['generated'])} by idrserve "
        f"{escape(report['idrserve_version'])}</p>"
    )
    if inp["skipped"]:
        skipped = ", ".join(f"{k}: {v}" for k, v in inp["skipped"].items())
        body.append(f'<p class="warn">lines skipped: {escape(skipped)}</p>')
    for w in inp["warnings"]:
        body.append(f'<p class="warn">{escape(w)}</p>')
    if report["empty"]:
        body.append("<h2>No requests</h2><p>These logs hold no request lines: nothing to report.")
    for name, src in report["sources"].items():
        who = "nginx (every client request)" if name == "nginx" else "idrserve (what reached it)"
        body.append(
            f"<h1>{escape(who)}</h1><p>{src['requests']} requests, {human_bytes(src['bytes'])}, "
            f"{src['errors']} errors (5xx), {escape(str(src['first']))} to "
            f"{escape(str(src['last']))}</p>"
        )
        body += [_over_time(src), _traffic(src), _caching(src)]
        if name == "nginx":
            body.append(_images(src))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>idrserve usage report</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
