"""``report.html``: one self-contained page (CSS inline, figures as base64 PNG).

The first screen answers "which model is best, and why": the ranking by mean
ATM'22 score (mean of TD, BD, DSC and precision) with n per model, whether the
lead holds after the Holm correction, and every warning that changes how to
read the numbers (a model failing the output gate on every case, missing
cases, failed pairs). The detail follows.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any

from core.compare import figures
from core.compare.batch import METRIC_COLUMNS, STAT_METRICS, CompareResult, finite
from core.compare.stats import ALPHA, MIN_PAIRED_CASES

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em;margin:0 0 6px}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f2f2f4}
td:first-child,th:first-child,td.t{text-align:left}
.note{color:#805000;font-size:12px}.grid td{text-align:center;vertical-align:top}
img.fig{max-width:720px;width:100%}img.snap{width:240px}.small{font-size:11px;color:#666}
.alert{background:#fdecea;border:1px solid #e0a0a0;color:#8a1010;padding:8px 12px;margin:8px 0;border-radius:4px}
.warn{background:#fff6e0;border:1px solid #e8c880;padding:6px 12px;margin:6px 0;border-radius:4px;font-size:13px}
.verdict{background:#eef6ee;border:1px solid #9c9;padding:10px 14px;margin:10px 0;border-radius:4px;font-size:14px}
table.rank td,table.rank th{font-size:13px;padding:4px 9px}tr.best td{font-weight:bold;background:#f4fbf4}
td.fail{color:#a01010}td.pass{color:#1a7a1a}
"""

RANK_METRICS = ("atm_score", "td", "bd", "dsc", "precision")


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


def mean_sd_text(mean: Any, sd: Any) -> str:
    """``mean ± sd``; the sd of one case is "n/a", not a false 0.00."""
    if not finite(mean):
        return "-"
    return f"{_fmt(mean)} &plusmn; {_fmt(sd) if finite(sd) else 'n/a'}"


def _table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str]], digits: int = 2, raw: tuple[str, ...] = ()
) -> str:
    if not rows:
        return "<p class='small'>(none)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = []
    for r in rows:
        cells = []
        for k, _ in columns:
            v = r.get(k)
            cls = " class='t'" if isinstance(v, str) else ""
            text = str(v) if k in raw and v is not None else _fmt(v, digits)
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(data: bytes, cls: str, alt: str) -> str:
    return f"<img class='{cls}' alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def gate_counts(result: CompareResult, model: str) -> tuple[int, int]:
    """(cases that passed the output gate, cases the gate saw) for a model run by the compare."""
    per = result.gate.get(model, {})
    return sum(1 for g in per.values() if g.get("passed")), len(per)


def ranking(result: CompareResult, summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows sorted best first by mean ATM'22 score (then DSC); rows without a score last."""

    def key(r: dict[str, Any]) -> tuple[float, float]:
        score = r.get("atm_score_mean")
        dsc = r.get("dsc_mean")
        return (-(score if finite(score) else -1e9), -(dsc if finite(dsc) else -1e9))

    return sorted(summary, key=key)


def verdict(result: CompareResult, summary: list[dict[str, Any]], tests: list[dict[str, Any]]) -> str:
    """One paragraph: the best model and why, in words, with what the statistics allow to say."""
    ranked = [r for r in ranking(result, summary) if finite(r.get("atm_score_mean"))]
    failed_gate = set(result.gate_failed_everywhere())
    if not ranked:
        return "No model could be scored: see the failures below."
    best = ranked[0]
    name = html.escape(best["model"])
    parts = [
        f"<b>Best: {name}</b>, with the highest mean ATM'22 score "
        f"({_fmt(best['atm_score_mean'])}, the mean of TD, BD, DSC and precision) over n = {best['n']} case(s): "
        f"TD {_fmt(best['td_mean'])}, BD {_fmt(best['bd_mean'])}, DSC {_fmt(best['dsc_mean'])}, "
        f"precision {_fmt(best['precision_mean'])} %."
    ]
    if len(ranked) > 1:
        second = ranked[1]
        lead = float(best["atm_score_mean"]) - float(second["atm_score_mean"])
        diffs: list[tuple[float, str, float]] = []
        for k in ("td", "bd", "dsc", "precision"):
            a, b = best.get(f"{k}_mean"), second.get(f"{k}_mean")
            if finite(a) and finite(b) and abs(a - b) >= 0.005:
                diffs.append((abs(a - b), k, a - b))
        why = ", ".join(
            f"{'ahead' if d > 0 else 'behind'} on {k.upper() if len(k) <= 3 else k} ({d:+.2f})"
            for _, k, d in sorted(diffs, reverse=True)
        )
        parts.append(f"It leads {html.escape(second['model'])} by {_fmt(lead)} points" + (f": {why}." if why else "."))
        pair = [
            t
            for t in tests
            if {t["model_a"], t["model_b"]} == {best["model"], second["model"]} and t["metric"] in RANK_METRICS
        ]
        if pair and all(t["n"] < MIN_PAIRED_CASES for t in pair):
            parts.append(
                f"With n = {pair[0]['n']} paired case(s) no test is run (at least {MIN_PAIRED_CASES} are needed): "
                "the ranking is descriptive only."
            )
        elif pair:
            sig = [t["metric"] for t in pair if t.get("significant") == "yes"]
            if sig:
                parts.append(
                    "The difference is significant after Holm correction "
                    f"(alpha {ALPHA:g}) for {', '.join(s.upper() if len(s) <= 3 else s for s in sig)}."
                )
            else:
                parts.append(f"No difference between the two is significant after Holm correction (alpha {ALPHA:g}).")
    if best["model"] in failed_gate:
        parts.append("<b>But its masks failed the output gate on every case: read its numbers with care.</b>")
    return " ".join(parts)


def _rank_table(result: CompareResult, summary: list[dict[str, Any]]) -> str:
    has_gate = bool(result.gate)
    head = ["#", "model", "n", "ATM score", "TD", "BD", "DSC", "precision"] + (["output gate"] if has_gate else [])
    rows = []
    for i, r in enumerate(ranking(result, summary), 1):
        cells = [
            str(i),
            html.escape(r["model"]),
            str(r["n"]),
            *(mean_sd_text(r.get(f"{k}_mean"), r.get(f"{k}_sd")) for k in RANK_METRICS),
        ]
        tds = [f"<td{' class=t' if j == 1 else ''}>{c}</td>" for j, c in enumerate(cells)]
        if has_gate:
            ok, seen = gate_counts(result, r["model"])
            if seen:
                cls = "pass" if ok == seen else "fail"
                tds.append(f"<td class='{cls}'>passed {ok} of {seen}</td>")
            else:
                tds.append("<td class='small'>not run (given as masks)</td>")
        rows.append(f"<tr{' class=best' if i == 1 else ''}>{''.join(tds)}</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f"<table class='rank'><tr>{header}</tr>{''.join(rows)}</table>"


def _misses_box(result: CompareResult, summary: list[dict[str, Any]]) -> str:
    """First screen: per model, the lobes and segmental bronchi it misses most."""
    from core.compare.anatomy import misses_text

    items = "".join(
        f"<li><b>{html.escape(m)}</b>: {html.escape(misses_text(result, summary, m))}</li>" for m in result.models
    )
    return (
        "<div class='warn' id='lobes-missed'>By the reference's lobes and segmental bronchi "
        f"(<a href='#per-lobe'>per lobe</a>):<ul style='margin:4px 0'>{items}</ul></div>"
    )


def _lobe_section(result: CompareResult, summary: list[dict[str, Any]]) -> str:
    """A lobe x model table of mean TD / BD, then each case's segmental bronchi in words."""
    from core.anatomy.metrics import ROWS
    from core.compare.anatomy import scores_of

    by = {(r["model"], r["lobe"]): r for r in summary}
    head = "<tr><th>lobe</th>" + "".join(f"<th>{html.escape(m)}<br>TD / BD (n)</th>" for m in result.models) + "</tr>"
    body = []
    for lobe in ROWS:
        cells = []
        for m in result.models:
            r = by.get((m, lobe))
            if r is None or not r["n"]:
                cells.append("<td>n/a</td>")
                continue
            cells.append(f"<td>{_fmt(r['td_mean'], 1)} / {_fmt(r['bd_mean'], 1)} ({r['n']})</td>")
        body.append(f"<tr><td class='t'>{lobe}</td>{''.join(cells)}</tr>")
    parts = [
        "<h2 id='per-lobe'>Per lobe (mean over cases) and segmental bronchi</h2>",
        "<p class='small'>TD and BD (percent) of the reference branches in each lobe, named on the reference "
        "(core.anatomy); <i>central</i> = trachea, main bronchi and bronchus intermedius; <i>unnamed</i> = "
        "branches whose lobe the labeller did not decide. n = cases whose reference has the lobe; n/a = in none. "
        "The rows add up to the overall TD and BD.</p>",
        f"<table class='lobes'>{head}{''.join(body)}</table>",
    ]
    lines = []
    for row in result.rows:
        sc = scores_of(row)
        if sc is None:
            continue
        missed = sc.missed_lobes()
        extra = f"; no branch detected in {', '.join(missed)}" if missed else ""
        lines.append(
            f"<tr><td class='t'>{html.escape(row.case)}</td><td class='t'>{html.escape(row.model)}</td>"
            f"<td class='t'>{html.escape(sc.sentence() + extra)}</td></tr>"
        )
    if lines:
        parts.append(
            "<table class='segmental'><tr><th>case</th><th>model</th><th>segmental bronchi (reference's names)</th>"
            f"</tr>{''.join(lines)}</table>"
        )
    return "".join(parts)


def build_report(
    result: CompareResult, t: dict[str, list[dict[str, Any]]], shots: dict[tuple[str, str], Path], snapshot_note: str
) -> tuple[str, str]:
    """(HTML text, note on the figures: empty when they are in)."""
    s = result.settings
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Airway model comparison</title>"
        f"<style>{_CSS}</style></head><body>",
        "<h1>Airway model comparison</h1>",
        f"<p class='small'>{len(result.cases)} case(s) x {len(result.models)} model(s). "
        f"Reference: {html.escape(result.reference_dir)}. Written {_dt.datetime.now().isoformat(timespec='seconds')}."
        "</p>",
    ]
    for m in result.gate_failed_everywhere():
        ok, seen = gate_counts(result, m)
        why: list[str] = next((list(g["problems"]) for g in result.gate[m].values() if g.get("problems")), [])
        parts.append(
            f"<div class='alert' id='gate-{html.escape(m)}'><b>{html.escape(m)} failed the output gate on every case "
            f"({seen - ok} of {seen})</b>: its masks do not look like these CTs' airway"
            f"{(' (' + html.escape('; '.join(why)) + ')') if why else ''}. Its scores describe masks that are "
            "not airways; a model trained on other data (size, spacing) is the usual cause.</div>"
        )
    parts.append(f"<div class='verdict' id='verdict'>{verdict(result, t['summary'], t['tests'])}</div>")
    parts.append(_rank_table(result, t["summary"]))
    if "metrics_lobes_summary" in t:
        parts.append(_misses_box(result, t["metrics_lobes_summary"]))
    for note in result.notes:
        parts.append(f"<div class='warn'>{html.escape(note)}</div>")
    if result.failures:
        parts.append(
            f"<div class='warn'>{len(result.failures)} case/model pair(s) could not be scored; "
            "<a href='#failures'>see why</a>.</div>"
        )
    parts.append(
        f"<p class='small'>Metrics: ATM'22 definitions ({'ATM22 rounding' if s.atm22 else 'exact ratios'}), "
        f"prediction's largest {s.connectivity}-connected component, branch detected at "
        f"{s.detection_threshold:g} of its centreline. Percent. sd = sample sd (n - 1); n/a for one case.</p>"
    )

    parts.append("<h2>Summary (mean &plusmn; sd over cases)</h2>")
    cols = [("model", "model"), ("n", "n")]
    rows = []
    for r in t["summary"]:
        d: dict[str, Any] = {"model": r["model"], "n": r["n"]}
        for k in STAT_METRICS:
            d[k] = mean_sd_text(r[f"{k}_mean"], r[f"{k}_sd"])
        rows.append(d)
    cols += [(k, k.upper() if len(k) <= 3 else k.replace("_", " ")) for k in STAT_METRICS]
    parts.append(_table(rows, cols, raw=tuple(STAT_METRICS)))

    parts.append("<h2>Paired tests (Wilcoxon signed-rank, two-sided, over cases)</h2>")
    tested = [r for r in t["tests"] if finite(r.get("p_value"))]
    sig = [r for r in tested if r.get("significant") == "yes"]
    parts.append(
        f"<p>{len(tested)} test(s) run, Holm-corrected together (alpha {ALPHA:g}); "
        f"{len(sig)} significant after correction"
        + (": " + ", ".join(html.escape(f"{r['model_a']} vs {r['model_b']} {r['metric']}") for r in sig) if sig else "")
        + f". Tests need at least {MIN_PAIRED_CASES} paired cases; below that they read n/a (n = k).</p>"
    )
    parts.append(
        _table(
            t["tests"],
            [
                ("model_a", "A"),
                ("model_b", "B"),
                ("metric", "metric"),
                ("n", "n"),
                ("mean_a", "mean A"),
                ("mean_b", "mean B"),
                ("mean_difference", "A - B"),
                ("p_value", "p"),
                ("p_holm", "p (Holm)"),
                ("significant", "significant"),
                ("note", "note"),
            ],
            digits=4,
        )
    )

    fig_note = ""
    dia = gen = None
    if figures.available():
        dia = figures.dsc_by_diameter_png(t["dsc_by_diameter_summary"], result.models)
        gen = figures.bd_by_generation_png(t["bd_by_generation_summary"], result.models)
    else:
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
                ("n", "n"),
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
                ("n", "n"),
                ("n_branches", "branches"),
                ("n_detected", "detected"),
                ("bd_mean", "BD mean"),
                ("bd_sd", "sd"),
                ("bd_pooled", "BD pooled"),
            ],
        )
    )
    if fig_note:
        parts.append(f"<p class='note'>{html.escape(fig_note)}</p>")

    if "metrics_lobes_summary" in t:
        parts.append(_lobe_section(result, t["metrics_lobes_summary"]))

    parts.append("<h2>Per case</h2>")
    case_cols = [("case", "case"), ("model", "model")]
    if result.gate:
        case_cols.append(("gate", "output gate"))
    parts.append(_table(t["metrics"], case_cols + [(c, c) for c, _ in METRIC_COLUMNS]))

    if result.failures:
        parts.append("<h2 id='failures'>Failed cases</h2>")
        parts.append(_table(t["failures"], [("case", "case"), ("model", "model"), ("message", "why")]))

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
