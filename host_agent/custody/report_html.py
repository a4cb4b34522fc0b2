"""The compliance report drawn for people: one self-contained HTML page from the dict
`host_agent.custody.report.build` returns (inline CSS and SVG; no scripts, no external assets).

The page shows the scope (vault, as-of, period, filters, bounds), the findings counted by code,
recorder, officer and case, a chart of each mandated phase's coverage (one lane per phase,
scaled to the phase: its span light, recorded segments solid, gaps red), a chart of each
recorder's clock offset at its dockings against the policy's bound, and the findings and
recorders as tables. Every string from the report is escaped: officer names, cases and
details come from what recorders signed, and a recorder may be hostile.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable
from typing import Any

from host_agent.custody.report import CODES
from host_agent.custody.times import iso

LABELS = {
    "gap_in_phase": "Recording broke during a mandated phase",
    "no_segment": "Mandated phase with no recording at all",
    "refused": "Pause, stop or mute refused",
    "no_notice": "No notice to the party (Art. 7)",
    "not_ended": "Phase not ended in the records so far",
    "late_offload": "Records offloaded late",
    "clock_never_set": "Records signed with a clock never set",
    "clock_drift": "Clock off beyond the bound at docking",
    "battery_override": "Phase started on a low battery",
    "readiness_failed": "Not ready for duty at docking (Art. 4)",
    "not_docked": "Recorder not docked for too long",
    "foreign_files": "Foreign files on the card",
    "storage_full": "Card full",
    "other_officer": "Recorded by an officer it was not issued to (Art. 8)",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22", "#393b79")
NICE_US = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 60_000_000, 600_000_000,
           3_600_000_000, 86_400_000_000)
CAP_US = 86_400_000_000
CSS = """
body{font:14px/1.4 system-ui,sans-serif;color:#1d2430;margin:24px auto;max-width:1200px;
padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid
#d8dee8;padding-bottom:4px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
.meta dt{color:#5a6578}.meta dd{margin:0}
table{border-collapse:collapse;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #e3e7ee;vertical-align:top}th{background:#eef2f7}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.zero td{color:#9aa3b2}
td.t{white-space:nowrap}tr.hit td.n{font-weight:bold;color:#b3261e}.wide{width:100%}
.counts{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
  .breakdown{flex:1;min-width:300px}
code{font-size:12px;color:#5a6578}.note{color:#5a6578;font-size:13px}
svg{display:block;max-width:100%;height:auto;font-family:system-ui,sans-serif}
"""


def e(value: object) -> str:
    """Escaped text of a report value ("—" for none)."""
    return "—" if value is None or value == "" else html.escape(str(value))


def clip(value: object, n: int) -> str:
    text = "—" if value is None else str(value)
    return html.escape(text if len(text) <= n else text[:n - 1] + "…")


def when(iso: object) -> str:
    """2023-11-14T22:13:21.000000Z → 2023-11-14 22:13:21 (UTC)."""
    text = str(iso) if isinstance(iso, str) else ""
    return e(text[:19].replace("T", " ") if len(text) >= 19 else iso)


def span(us: int) -> str:
    s = us / 1e6
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s // 60:.0f} min {s % 60:02.0f} s"
    return f"{s // 3600:.0f} h {s % 3600 // 60:02.0f} min"


def ms(us: float) -> str:
    v = abs(us) / 1000
    sign = "−" if us < 0 else ""
    for unit, size in (("years", 31_557_600_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("min", 60_000), ("s", 1000)):
        if v >= size:
            return f"{sign}{v / size:.3g} {unit}"
    return f"{sign}{v:.3g} ms"


def table(head: Iterable[str], rows: Iterable[str], cls: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows) or '<tr><td colspan="9" class="note">none</td></tr>'
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def header(r: dict[str, Any]) -> str:
    period, filters, b = r.get("period") or {}, r.get("filters") or {}, r.get("bounds") or {}
    scope = ", ".join(f"{k} = {e(v)}" for k, v in filters.items() if v) or "none (everything)"
    items = [
        ("Vault", e(r.get("vault"))), ("Docks", e(", ".join(r.get("docks") or []))),
        ("As of", when(r.get("as_of"))),
        ("Period", f"{when(period.get('from')) if period.get('from') else 'the beginning'} – "
                   f"{when(period.get('to')) if period.get('to') else 'now'}"),
        ("Filters", scope),
        ("Bounds", f"offload within {e(b.get('late_offload_h'))} h · docked every "
                   f"{e(b.get('not_docked_days'))} days · clock within ±"
                   f"{ms(int(b.get('clock_bound_us') or 0))}"),
        ("Format", e(r.get("format")))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<h1>Compliance report</h1><dl class="meta">{dl}</dl>'


def summary(r: dict[str, Any]) -> str:
    counts = r.get("counts") or {}
    by_code = counts.get("by_code") or {}
    codes = list(CODES) + sorted(c for c in by_code if c not in CODES)
    rows = [f'<tr class="{"hit" if by_code.get(c) else "zero"}" data-code="{e(c)}"><td>'
            f'{e(LABELS.get(c, c))}</td><td><code>{e(c)}</code></td>'
            f'<td class="n">{int(by_code.get(c, 0))}</td></tr>' for c in codes]
    parts = []
    for key, title in (("by_device", "Recorder"), ("by_officer", "Officer"), ("by_case", "Case")):
        pairs = sorted((counts.get(key) or {}).items(), key=lambda kv: (-kv[1], str(kv[0])))
        parts.append(table((title, "Findings"), (f'<tr><td>{e(k)}</td><td class="n">{int(v)}'
                                                 "</td></tr>" for k, v in pairs), key))
    total = len(r.get("findings") or [])
    return (f"<h2>Summary: {total} finding{'s' * (total != 1)}</h2><div class=\"counts\">"
            + table(("Finding", "Code", "Count"), rows, "by-code")
            + f'<div class="counts breakdown">{"".join(parts)}</div></div>')


def coverage_chart(phases: list[dict[str, Any]]) -> str:
    if not phases:
        return '<p class="note">No mandated phase in this period.</p>'
    w, x0, x1, lane, top = 1160, 360, 900, 40, 34
    h = top + lane * len(phases) + 8
    legend = "".join(
        f'<rect x="{x}" y="8" width="14" height="10" fill="{c}"/>'
        f'<text x="{x + 18}" y="17" font-size="12">{t}</text>'
        for x, c, t in ((x0, "#d5deea", "phase span"), (x0 + 110, "#2f6db5", "recorded"),
                        (x0 + 205, "#d62728", "gap (recording broke)")))
    out = [f'<svg class="coverage" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"'
           f' viewBox="0 0 {w} {h}" role="img" aria-label="coverage per phase">{legend}'
           f'<text x="{x1 + 12}" y="17" font-size="12" fill="#5a6578">coverage</text>']
    ordered = sorted(phases, key=lambda p: (p.get("started_us") or 0, str(p.get("device"))))
    for i, p in enumerate(ordered):
        y = top + i * lane
        t0 = int(p.get("started_us") or 0)
        length = int(p.get("length_us") or 0)

        def x(t: int, t0: int = t0, length: int = length) -> float:
            return x0 + (x1 - x0) * min(max((t - t0) / length, 0.0), 1.0) if length else x0

        ended = p.get("ended_us") is not None
        cov = float(p.get("coverage") or 0.0)
        flags = [f for f, on in (("no notice", not p.get("notice")), ("not ended", not ended),
                                 (f"{p.get('refusals')} refused", p.get("refusals")),
                                 ("no segment", not p.get("segments"))) if on]
        title = (f"{p.get('device')} row {p.get('row')} case {p.get('case')} officer "
                 f"{p.get('officer')}: {p.get('started')} – {p.get('ended') or 'not ended'}")
        bars = [f'<rect x="{x0}" y="{y + 8}" width="{x1 - x0}" height="16" fill="#d5deea"'
                + ("" if ended else ' stroke="#5a6578" stroke-dasharray="4 3"') + "/>"]
        bars += [f'<rect class="segment" x="{x(a):.1f}" y="{y + 8}" width="'
                 f'{max(x(b) - x(a), 1):.1f}" height="16" fill="#2f6db5"/>'
                 for a, b in p.get("segments") or []]
        bars += [f'<rect class="gap" x="{x(a):.1f}" y="{y + 5}" width="{max(x(b) - x(a), 2):.1f}"'
                 f' height="22" fill="#d62728"/>' for a, b in p.get("gaps") or []]
        colour = "#1b7f3b" if cov >= 0.999 else "#b3261e"
        out.append(
            f'<g class="lane"><title>{e(title)}</title>'
            f'<text x="0" y="{y + 15}" font-size="13"><tspan font-weight="bold">'
            f'{clip(p.get("device"), 18)}</tspan> · row {e(p.get("row"))} · '
            f'{clip(p.get("case"), 26)}</text><text x="0" y="{y + 31}" font-size="11" '
            f'fill="#5a6578">{clip(p.get("officer"), 22)} · {when(p.get("started"))} · '
            f'{span(length)}</text>{"".join(bars)}'
            f'<text x="{x1 + 12}" y="{y + 21}" font-size="14" font-weight="bold" '
            f'fill="{colour}">{cov * 100:.0f}%</text><text x="{x1 + 60}" y="{y + 15}" '
            f'font-size="11" fill="#b3261e">{html.escape(", ".join(flags[:2]))}'
            f'<tspan x="{x1 + 60}" dy="14">{html.escape(", ".join(flags[2:]))}</tspan></text></g>')
    return "".join(out) + "</svg>"


def y_scale(worst: int, bound: int) -> tuple[Callable[[float], float], list[float]]:
    """Offset (µs) → -1..1, and the offsets to mark: linear while the worst offset is within
    20 bounds, else symmetric-log (the bound stays visible beside seconds of drift). Offsets
    beyond a day (a clock never set) are held at the edge."""
    top = min(max(worst, bound), CAP_US) * 1.15
    if worst <= 20 * bound:
        mag = 10 ** math.floor(math.log10(top / 4))
        step = next(k * mag for k in (1, 2, 5, 10) if k * mag >= top / 4)
        top = math.ceil(top / step) * step
        return (lambda v: max(-1.0, min(1.0, v / top))), [k * step for k in range(-4, 5)]
    top = next((n for n in NICE_US if n >= top), top)

    def g(v: float) -> float:
        return math.copysign(math.log10(1 + abs(v) / 1000), v)

    return ((lambda v: max(-1.0, min(1.0, g(v) / g(top)))),
            [0.0] + [s * n for n in NICE_US if n <= top for s in (1, -1)])


def drift_chart(drift: dict[str, list[dict[str, Any]]], bound: int) -> str:
    series = {d: [p for p in pts if isinstance(p.get("t_us"), int)
                  and isinstance(p.get("offset_us"), int)] for d, pts in sorted(drift.items())}
    series = {d: pts for d, pts in series.items() if pts}
    points = [p for pts in series.values() for p in pts]
    if not points:
        return '<p class="note">No docking measured a clock offset in this period.</p>'
    bound = max(bound, 1)
    w, left, right, top, bottom = 1160, 90, 820, 16, 296
    h = max(bottom + 48, top + 36 * len(series) + 20)
    t_lo: int = min(p["t_us"] for p in points)
    t_hi: int = max(p["t_us"] for p in points)
    if t_hi - t_lo < 60_000_000:
        t_lo, t_hi = t_lo - 30_000_000, t_hi + 30_000_000
    worst: int = max(abs(p["offset_us"]) for p in points)
    f, ticks = y_scale(worst, bound)

    def sx(t: int) -> float:
        return left + (right - left) * (t - t_lo) / (t_hi - t_lo)

    def sy(v: float) -> float:
        return (top + bottom) / 2 - (bottom - top) / 2 * f(v)

    kept: list[float] = []
    for v in sorted(set(ticks), key=abs):  # no two labels closer than 14 px
        if abs(f(v)) <= 1 and all(abs(sy(v) - sy(k)) >= 14 for k in kept):
            kept.append(v)
    out = [f'<svg class="drift" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" role="img" aria-label="clock offset at docking">']
    out += [f'<line x1="{left}" x2="{right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#e3e7ee"'
            f'/><text x="{left - 8}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{ms(v) if v else '0'}</text>" for v in kept]
    chars = 10 if t_hi - t_lo > 2 * 86_400_000_000 else 16 if t_hi - t_lo > 3_600_000_000 else 19
    out += [f'<text x="{sx(t):.1f}" y="{bottom + 18}" font-size="11" text-anchor="middle">'
            f'{e((iso(t) or "").replace("T", " ")[:chars])}</text>'
            for t in (t_lo + (t_hi - t_lo) * k // 4 for k in range(5))]
    out += [f'<line class="bound" x1="{left}" x2="{right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" '
            'stroke="#d62728" stroke-dasharray="6 4"/>' for v in (bound, -bound)]
    out += [f'<text x="{right - 4}" y="{sy(bound) - 5:.1f}" font-size="11" fill="#d62728" '
            f'text-anchor="end">bound ±{ms(bound)}</text>',
            f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
            'fill="none" stroke="#9aa3b2"/>',
            f'<text x="{(left + right) / 2}" y="{bottom + 40}" font-size="12" '
            'text-anchor="middle">docking time (UTC)</text>',
            f'<text transform="translate(16 {(top + bottom) / 2}) rotate(-90)" font-size="12" '
            'text-anchor="middle">clock offset at docking'
            f'{"" if worst <= 20 * bound else " (log scale)"}</text>']
    for i, (device, pts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        xy = [(sx(p["t_us"]), sy(p["offset_us"]), p["offset_us"], p) for p in pts]
        dots = "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{6 if abs(v) > bound else 4}" fill="{c}" '
            f'stroke="{"#1d2430" if abs(v) > bound else c}"><title>{e(device)} docked '
            f'{when(p.get("at"))}: clock off by {ms(v)}</title></circle>'
            + (f'<text x="{a + 9:.1f}" y="{b + (12 if b < top + 10 else -4):.1f}" font-size="11"'
               f' fill="{c}">off scale: {ms(v)}</text>' if abs(f(v)) >= 1 else "")
            for a, b, v, p in xy)
        far = max((p["offset_us"] for p in pts), key=abs)
        ly = top + 8 + 36 * i
        out.append(f'<g class="series" data-device="{e(device)}"><polyline points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in xy)
                   + f'" fill="none" stroke="{c}" stroke-width="2"/>{dots}'
                   f'<rect x="{right + 20}" y="{ly}" width="14" height="10" fill="{c}"/>'
                   f'<text x="{right + 40}" y="{ly + 10}" font-size="12">{clip(device, 40)}'
                   f'<tspan x="{right + 40}" dy="15" font-size="11" fill="#5a6578">{len(pts)} '
                   f'docking{"s" * (len(pts) != 1)}, worst {ms(far)}</tspan></text></g>')
    return "".join(out) + "</svg>"


def findings_table(findings: list[dict[str, Any]]) -> str:
    def recs(f: dict[str, Any]) -> str:
        seqs = [str(s) for s in f.get("records") or []]
        return e(", ".join(seqs[:6]) + (f" … ({len(seqs)})" if len(seqs) > 6 else ""))

    rows = (f'<tr data-code="{e(f.get("code"))}"><td class="t">{when(f.get("t"))}</td><td>'
            f'{e(LABELS.get(str(f.get("code")), f.get("code")))}<br><code>{e(f.get("code"))}'
            f'</code></td><td>{e(f.get("device"))}</td><td>{e(f.get("officer"))}</td><td>'
            f'{e(f.get("case"))}</td><td>{e(f.get("detail"))}</td><td>{recs(f)}</td></tr>'
            for f in findings)
    return table(("Time (UTC)", "Finding", "Recorder", "Officer", "Case", "Detail", "Records"),
                 rows, "findings wide")


def devices_table(devices: list[dict[str, Any]]) -> str:
    rows = (f'<tr><td>{e(d.get("device"))}</td><td class="n">{e(d.get("records"))}</td>'
            f'<td>{e(d.get("holder"))}</td><td>{when(d.get("last_docking"))}</td>'
            f'<td class="n">{e(d.get("findings"))}</td></tr>' for d in devices)
    return table(("Recorder", "Records", "Held by", "Last docking (UTC)", "Findings"), rows,
                 "devices")


def render(report: dict[str, Any]) -> str:
    """The report as one HTML page."""
    bound = int((report.get("bounds") or {}).get("clock_bound_us") or 0)
    phases = report.get("phases") or []
    body = [header(report), summary(report),
            f"<h2>Coverage of mandated phases ({len(phases)})</h2>"
            '<p class="note">One lane per phase, scaled from its start to its end; the share '
            "of the phase that was recorded on the right.</p>", coverage_chart(phases),
            "<h2>Clock offset at docking</h2>", drift_chart(report.get("drift") or {}, bound),
            "<h2>Findings</h2>", findings_table(report.get("findings") or []),
            "<h2>Recorders</h2>", devices_table(report.get("devices") or [])]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Compliance '
            f"report — {e(report.get('vault'))}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
