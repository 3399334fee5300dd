"""``report.html``: one self-contained page (CSS inline, figures as base64 PNG)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any

from core.compare import figures
from core.compare.batch import METRIC_COLUMNS, STAT_METRICS, CompareResult

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f2f2f4}
td:first-child,th:first-child,td.t{text-align:left}
.note{color:#805000;font-size:12px}.grid td{text-align:center;vertical-align:top}
img.fig{max-width:720px}img.snap{width:240px}.small{font-size:11px;color:#666}
"""


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}" if abs(v) < 0.01 and v != 0 else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(rows: list[dict], columns: list[tuple[str, str]], digits: int = 2) -> str:
    if not rows:
        return "<p class='small'>(none)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = []
    for r in rows:
        cells = []
        for k, _ in columns:
            v = r.get(k)
            cls = " class='t'" if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{_fmt(v, digits)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(data: bytes, cls: str, alt: str) -> str:
    return f"<img class='{cls}' alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def build_report(
    result: CompareResult, t: dict[str, list[dict]], shots: dict[tuple[str, str], Path], snapshot_note: str
) -> tuple[str, str]:
    """(HTML text, note on the figures: empty when they are in)."""
    s = result.settings
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Airway model comparison</title>"
        f"<style>{_CSS}</style></head><body>",
        "<h1>Airway model comparison</h1>",
        f"<p>{len(result.cases)} case(s) x {len(result.models)} model(s): "
        f"{', '.join(html.escape(m) for m in result.models)}. Reference: {html.escape(result.reference_dir)}. "
        f"Metrics: ATM'22 definitions ({'ATM22 rounding' if s.atm22 else 'exact ratios'}), "
        f"prediction's largest {s.connectivity}-connected component, branch detected at "
        f"{s.detection_threshold:g} of its centreline. Percent; sd = population sd. "
        f"<span class='small'>Written {_dt.datetime.now().isoformat(timespec='seconds')}.</span></p>",
    ]
    if result.failures:
        parts.append("<h2>Failed cases</h2>")
        parts.append(_table(t["failures"], [("case", "case"), ("model", "model"), ("message", "why")]))

    parts.append("<h2>Summary (mean &plusmn; sd over cases)</h2>")
    cols = [("model", "model"), ("cases", "cases")]
    rows = []
    for r in t["summary"]:
        d = {"model": r["model"], "cases": r["cases"]}
        for k in STAT_METRICS:
            d[k] = f"{_fmt(r[f'{k}_mean'])} &plusmn; {_fmt(r[f'{k}_sd'])}"
        rows.append(d)
    cols += [(k, k.upper() if len(k) <= 3 else k.replace("_", " ")) for k in STAT_METRICS]
    parts.append(_table(rows, cols).replace("&amp;plusmn;", "&plusmn;"))

    parts.append("<h2>Paired tests (Wilcoxon signed-rank, two-sided, over cases)</h2>")
    parts.append(
        _table(
            t["tests"],
            [
                ("model_a", "A"),
                ("model_b", "B"),
                ("metric", "metric"),
                ("cases", "cases"),
                ("mean_a", "mean A"),
                ("mean_b", "mean B"),
                ("mean_difference", "A - B"),
                ("p_value", "p"),
                ("note", "note"),
            ],
            digits=4,
        )
    )

    fig_note = ""
    if figures.available():
        dia = figures.dsc_by_diameter_png(t["dsc_by_diameter_summary"], result.models)
        gen = figures.bd_by_generation_png(t["bd_by_generation_summary"], result.models)
    else:
        dia = gen = None
        fig_note = "Plots left out: matplotlib is not installed (pip install matplotlib)."
    parts.append("<h2>DSC per airway diameter (Zheng et al. 2021, Fig. 6)</h2>")
    if dia:
        parts.append(_img(dia, "fig", "DSC per diameter"))
    parts.append(
        _table(
            t["dsc_by_diameter_summary"],
            [
                ("model", "model"),
                ("interval", "diameter"),
                ("cases", "cases"),
                ("dsc_mean", "DSC mean"),
                ("dsc_sd", "sd"),
                ("dsc_pooled", "DSC pooled"),
            ],
        )
    )
    parts.append("<h2>Branches detected per generation</h2>")
    if gen:
        parts.append(_img(gen, "fig", "BD per generation"))
    parts.append(
        _table(
            t["bd_by_generation_summary"],
            [
                ("model", "model"),
                ("generation", "generation"),
                ("cases", "cases"),
                ("branches", "branches"),
                ("detected", "detected"),
                ("bd_mean", "BD mean"),
                ("bd_sd", "sd"),
                ("bd_pooled", "BD pooled"),
            ],
        )
    )
    if fig_note:
        parts.append(f"<p class='note'>{html.escape(fig_note)}</p>")

    parts.append("<h2>Per case</h2>")
    parts.append(_table(t["metrics"], [("case", "case"), ("model", "model")] + [(c, c) for c, _ in METRIC_COLUMNS]))

    parts.append("<h2>3D (TP light, FP green, FN red; anterior view)</h2>")
    if snapshot_note:
        parts.append(f"<p class='note'>{html.escape(snapshot_note)}</p>")
    if shots:
        grid = [
            "<table class='grid'><tr><th>case</th>"
            + "".join(f"<th>{html.escape(m)}</th>" for m in result.models)
            + "</tr>"
        ]
        for case in result.cases:
            cells = []
            for m in result.models:
                p = shots.get((case, m))
                cells.append(f"<td>{_img(p.read_bytes(), 'snap', f'{case} {m}') if p and p.exists() else '-'}</td>")
            grid.append(f"<tr><td class='t'>{html.escape(case)}</td>{''.join(cells)}</tr>")
        parts.append("".join(grid) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts), fig_note
