"""The per-lobe and per-segmental-bronchus tables of a comparison (rows' ``anatomy``, see
core.anatomy.metrics), and the words the report's first screen says about them.

A lobe the reference has no branch of reads ``n/a`` (never 0 or 100) in every table; the mean
over cases of a lobe is over the cases whose reference has it (``n``).
"""

from __future__ import annotations

import math
from typing import Any

from core.anatomy.metrics import LOBE_ROWS, ROWS, AnatomyScores, segment_order
from core.compare.batch import CaseRow, CompareResult, finite
from core.compare.stats import mean_sd

NA = "n/a"


def scores_of(row: CaseRow) -> AnatomyScores | None:
    doc = row.metrics.get("anatomy")
    return AnatomyScores.from_dict(doc) if isinstance(doc, dict) else None


def has_anatomy(result: CompareResult) -> bool:
    return any(isinstance(r.metrics.get("anatomy"), dict) for r in result.rows)


def _na(v: float) -> Any:
    return v if finite(v) else NA


def lobe_rows(result: CompareResult) -> list[dict[str, Any]]:
    """``metrics_lobes.csv``: one row per case, model and lobe (plus ``central`` and ``unnamed``)."""
    out = []
    for r in result.rows:
        s = scores_of(r)
        if s is None:
            continue
        for lobe in s.lobes:
            out.append(
                {
                    "case": r.case,
                    "model": r.model,
                    "lobe": lobe.lobe,
                    "td": _na(lobe.td),
                    "bd": _na(lobe.bd),
                    "branches": lobe.branches,
                    "detected": lobe.detected,
                    "length_mm": round(lobe.length_mm, 3),
                }
            )
    return out


def segment_rows(result: CompareResult) -> list[dict[str, Any]]:
    """``metrics_segments.csv``: one row per case, model and segmental bronchus the reference names."""
    out = []
    for r in result.rows:
        s = scores_of(r)
        if s is None:
            continue
        flags = {n: 1 for n in s.segmental.detected} | {n: 0 for n in s.segmental.missed}
        for name in sorted(flags, key=segment_order):
            out.append({"case": r.case, "model": r.model, "segment": name, "detected": flags[name]})
    return out


def lobe_summary(result: CompareResult) -> list[dict[str, Any]]:
    """``metrics_lobes_summary.csv``: per model and lobe, mean and sd of TD and BD over the cases
    whose reference has the lobe (``n``), and the pooled branch counts."""
    out = []
    for model, rows in result.by_model().items():
        scores = [s for r in rows if (s := scores_of(r)) is not None]
        if not scores:
            continue
        for lobe in ROWS:
            found = [x for s in scores if (x := s.row(lobe)) is not None and x.found]
            td_m, td_s = mean_sd([x.td for x in found])
            bd_m, bd_s = mean_sd([x.bd for x in found])
            out.append(
                {
                    "model": model,
                    "lobe": lobe,
                    "n": len(found),
                    "td_mean": _na(td_m),
                    "td_sd": _na(td_s) if found else NA,
                    "bd_mean": _na(bd_m),
                    "bd_sd": _na(bd_s) if found else NA,
                    "branches": sum(x.branches for x in found),
                    "detected": sum(x.detected for x in found),
                }
            )
    return out


def worst_lobes(summary: list[dict[str, Any]], model: str, k: int = 2) -> list[dict[str, Any]]:
    """The model's ``k`` lobes with the lowest mean BD (then TD), among lobes it misses anything of."""
    mine = [
        r for r in summary if r["model"] == model and r["lobe"] in LOBE_ROWS and finite(r["bd_mean"]) and r["n"] > 0
    ]
    missed = [r for r in mine if r["bd_mean"] < 100.0 or (finite(r["td_mean"]) and r["td_mean"] < 100.0)]
    return sorted(missed, key=lambda r: (r["bd_mean"], r["td_mean"] if finite(r["td_mean"]) else math.inf))[:k]


def missed_segments(result: CompareResult, model: str) -> list[tuple[str, int, int]]:
    """(segmental bronchus, cases it is missed in, cases the reference names it), most missed first."""
    missed: dict[str, int] = {}
    named: dict[str, int] = {}
    for r in result.by_model().get(model, []):
        s = scores_of(r)
        if s is None:
            continue
        for n in s.segmental.detected + s.segmental.missed:
            named[n] = named.get(n, 0) + 1
        for n in s.segmental.missed:
            missed[n] = missed.get(n, 0) + 1
    order = sorted(missed, key=lambda n: (-missed[n], segment_order(n)))
    return [(n, missed[n], named[n]) for n in order]


def misses_text(result: CompareResult, summary: list[dict[str, Any]], model: str) -> str:
    """Plain words: which lobes and segmental bronchi the model misses most."""
    if not any(r["model"] == model for r in summary):
        return "no per-lobe figures"
    worst = worst_lobes(summary, model)
    lobes = (
        "lobes missed most: "
        + ", ".join(f"{r['lobe']} (BD {r['bd_mean']:.1f} %, TD {_pct(r['td_mean'])})" for r in worst)
        if worst
        else "every branch of every lobe detected"
    )
    not_found = [r["lobe"] for r in summary if r["model"] == model and r["lobe"] in LOBE_ROWS and r["n"] == 0]
    if not_found:
        lobes += f"; not found in any reference: {', '.join(not_found)} (n/a)"
    segs = missed_segments(result, model)
    if segs:
        shown = ", ".join(f"{n} ({k} of {t})" for n, k, t in segs[:5])
        lobes += f"; segmental bronchi missed most: {shown}" + (f" and {len(segs) - 5} more" if len(segs) > 5 else "")
    return lobes


def _pct(v: Any) -> str:
    return f"{v:.1f} %" if finite(v) else NA
