"""An audit's findings for people: a text summary for the terminal, and an HTML page.

The HTML page is one self-contained file (inline CSS and SVG, no script, no font, no
request to anywhere), so it can be archived, mailed and opened offline years later.
Every value that came from the log is escaped.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

from clients.audit_verify import HOUR_MS, Report, Tally

DAY_HOURS: Final = 24
#: Anomalies printed on the terminal before "... and N more" (the HTML lists all).
SHOWN_ANOMALIES: Final = 50
_PALETTE: Final = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_WIDTH, _HEIGHT, _PAD = 720, 220, 40


def summary(report: Report, *, seconds: float = 0.0, verify_seconds: float = 0.0) -> str:
    """The terminal report: what was verified, counts, erasures, warnings, anomalies."""
    tally = report.tally
    lines = [f"Audit of log {report.origin}: leaves {report.start}..{report.end - 1}"]
    rate = f", {tally.entries / verify_seconds:,.0f} leaves/s verifying" if verify_seconds else ""
    lines.append(
        f"  {tally.entries} entries verified, {tally.records} records, "
        f"{tally.signatures} signatures checked in {seconds:.1f} s{rate}"
    )
    if report.root is not None:
        lines.append(f"  root {report.root.hex()}")
    for size, label in report.checkpoints:
        lines.append(f"  checked against the {label} checkpoint of {size} leaves")
    lines += _counts("Events by kind", tally.by_kind)
    lines += _counts("Events by agency", tally.by_agency)
    lines += _counts("Events by channel", tally.by_channel)
    lines += _refusals(tally)
    if tally.erasures:
        lines.append("Deleted records (each with a tombstone signed by the log key):")
        lines += [
            f"  leaf {e.index}: deleted {_time(e.at)}, tombstone leaf {e.tombstone}: {e.reason}"
            for e in tally.erasures
        ]
    lines += [f"warning: {text}" for text in report.warnings]
    lines += _anomalies(report)
    return "\n".join(lines)


def _refusals(tally: Tally) -> list[str]:
    """Refusals logged one by one, those only counted in summaries, and both by problem."""
    summed = sum(tally.summarized.values())
    lines = [
        f"Refused requests: {len(tally.refusals)} logged one by one, {summed} counted in "
        f"{tally.summaries} summaries (refusals that name no agency)"
    ]
    rows = tally.refusals_by_problem()
    if rows:
        width = max(len("problem"), *(len(problem) for problem, *_ in rows))
        lines.append(f"  {'problem':<{width}}  status  one by one  summarized")
        lines += [
            f"  {problem:<{width}}  {status:>6}  {single:>10}  {summarized:>10}"
            for problem, status, single, summarized in rows
        ]
    return lines


def _counts(title: str, counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    width = max(len(name) for name in counts)
    return [f"{title}:"] + [
        f"  {name:<{width}}  {count:>8}" for name, count in sorted(counts.items())
    ]


def _anomalies(report: Report) -> list[str]:
    if report.clean:
        return ["Result: no anomaly found."]
    lines = [f"ANOMALIES: {len(report.anomalies)}"]
    lines += [f"  {anomaly}" for anomaly in report.anomalies[:SHOWN_ANOMALIES]]
    if len(report.anomalies) > SHOWN_ANOMALIES:
        lines.append(f"  ... and {len(report.anomalies) - SHOWN_ANOMALIES} more")
    return lines


def _time(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- HTML ----------------------------------------------------------------------------


def html_page(report: Report, *, title: str = "siko audit report") -> str:
    """The whole report as one self-contained HTML document."""
    tally = report.tally
    verdict = "no anomaly found" if report.clean else f"{len(report.anomalies)} anomalies"
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>Log <code>{_e(report.origin)}</code>, leaves {report.start}..{report.end - 1}: "
        f"{tally.entries} entries, {tally.records} records, {tally.signatures} signatures "
        f"checked. <strong class={'ok' if report.clean else 'bad'}>{verdict}</strong>.</p>",
        "<h2>Activity per agency</h2>",
        chart(tally.hourly_by_agency),
        "<h2>Activity per channel</h2>",
        chart(tally.hourly_by_channel),
        "<h2>Events by kind</h2>",
        _table(("kind", "events"), sorted(tally.by_kind.items())),
        "<h2>Refused requests by problem</h2>",
        f"<p>{len(tally.refusals)} logged one by one (the agency is named), "
        f"{sum(tally.summarized.values())} counted in {tally.summaries} summaries "
        "(refusals that name no agency: no valid signature, or a replay).</p>",
        _table(
            ("problem", "status", "logged one by one", "in summaries"),
            tally.refusals_by_problem(),
        ),
        "<h2>Refused requests logged one by one</h2>",
        _table(
            ("leaf", "time", "agency", "request", "problem", "status"),
            [
                (
                    r.index,
                    _time(r.at),
                    r.agency or "(unknown)",
                    f"{r.method} {r.path}",
                    r.problem,
                    r.status,
                )
                for r in tally.refusals
            ],
        ),
        "<h2>Deleted records</h2>",
        _table(
            ("leaf", "tombstone", "deleted", "reason"),
            [(e.index, e.tombstone, _time(e.at), e.reason) for e in tally.erasures],
        ),
        "<h2>Anomalies</h2>",
        _table(
            ("leaf", "anomaly", "detail"),
            [
                ("log" if a.index is None else a.index, a.problem.value, a.detail)
                for a in report.anomalies
            ],
        ),
    ]
    if report.warnings:
        body += ["<h2>Warnings</h2><ul>", *(f"<li>{_e(w)}</li>" for w in report.warnings), "</ul>"]
    return _DOCUMENT.format(title=_e(title), body="\n".join(body))


def chart(series: Mapping[str, Counter[int]]) -> str:
    """An inline SVG line chart of events per hour (per day beyond three days)."""
    hours = [hour for counts in series.values() for hour in counts]
    if not hours:
        return "<p>No events.</p>"
    step = 1 if max(hours) - min(hours) <= 3 * DAY_HOURS else DAY_HOURS
    first, last = min(hours) // step, max(hours) // step
    buckets = {name: _bucketed(counts, step) for name, counts in series.items()}
    peak = max(max(b.values()) for b in buckets.values())
    span = max(1, last - first)

    def point(bucket: int, count: int) -> str:
        x = _PAD + (bucket - first) * (_WIDTH - 2 * _PAD) / span
        y = _HEIGHT - _PAD - count * (_HEIGHT - 2 * _PAD) / peak
        return f"{x:.1f},{y:.1f}"

    parts = [_axes(first * step * HOUR_MS, last * step * HOUR_MS, peak)]
    for number, (name, counts) in enumerate(sorted(buckets.items())):
        color = _PALETTE[number % len(_PALETTE)]
        line = " ".join(point(b, counts.get(b, 0)) for b in range(first, last + 1))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{line}"/>')
        parts.append(
            f'<text x="{_WIDTH - _PAD + 4}" y="{_PAD + 14 * number}" fill="{color}" '
            f'font-size="11">{_e(name)}</text>'
        )
    unit = "hour" if step == 1 else "day"
    return (
        f'<svg width="{_WIDTH + 160}" height="{_HEIGHT}" '
        f'role="img" aria-label="events per {unit}">{"".join(parts)}</svg>'
    )


def _bucketed(counts: Counter[int], step: int) -> Counter[int]:
    result: Counter[int] = Counter()
    for hour, count in counts.items():
        result[hour // step] += count
    return result


def _axes(first_ms: int, last_ms: int, peak: int) -> str:
    bottom, right = _HEIGHT - _PAD, _WIDTH - _PAD
    return (
        f'<line x1="{_PAD}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{bottom}" stroke="#444"/>'
        f'<text x="{_PAD}" y="{bottom + 16}" font-size="11">{_time(first_ms)}</text>'
        f'<text x="{right}" y="{bottom + 16}" font-size="11" text-anchor="end">'
        f"{_time(last_ms)}</text>"
        f'<text x="{_PAD - 4}" y="{_PAD + 4}" font-size="11" text-anchor="end">{peak}</text>'
        f'<text x="{_PAD - 4}" y="{bottom}" font-size="11" text-anchor="end">0</text>'
    )


def _table(head: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    cells = ["<tr>" + "".join(f"<td>{_e(str(v))}</td>" for v in row) + "</tr>" for row in rows]
    if not cells:
        return "<p>None.</p>"
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(cells)}</table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_DOCUMENT: Final = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 90%; }}
.ok {{ color: #2a7a2a; }} .bad {{ color: #b00020; }}
</style></head>
<body>
{body}
</body></html>
"""
