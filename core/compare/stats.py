"""Statistics over cases: per-model mean and sd, paired Wilcoxon signed-rank tests
between models, DSC per airway diameter (Zheng et al. 2021, Fig. 6) and BD per
generation.

Honest at small n: sd is the sample sd (ddof = 1; undefined for one case);
with fewer than :data:`MIN_PAIRED_CASES` paired cases a test is not run and says
``n/a (n = k)`` (four pairs give a two-sided exact p of at least 0.125, so
"p 1.0000" only looked like an answer); the p-values of all tests of a
comparison are Holm-corrected together (the family: every model pair x metric),
and ``significant`` says which stay below :data:`ALPHA` after the correction."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np

from core.compare.batch import STAT_METRICS, CompareResult, finite

MIN_PAIRED_CASES = 5
ALPHA = 0.05


def mean_sd(values: list[Any]) -> tuple[float, float]:
    """Mean and sample sd (ddof = 1) of the finite values; sd is nan for one value, both for none."""
    a = np.asarray([v for v in values if finite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); nan stays nan and is not counted."""
    idx = [i for i, p in enumerate(p_values) if finite(p)]
    m = len(idx)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def summary_rows(result: CompareResult, metrics: tuple[str, ...] = STAT_METRICS) -> list[dict[str, Any]]:
    """Per model: ``n`` (cases evaluated), ``<metric>_n`` (cases with a finite value) and
    ``<metric>_mean`` / ``<metric>_sd``."""
    out = []
    for model, rows in result.by_model().items():
        d: dict[str, Any] = {"model": model, "n": len(rows)}
        for k in metrics:
            values = [r.metrics.get(k) for r in rows]
            d[f"{k}_n"] = sum(1 for v in values if finite(v))
            d[f"{k}_mean"], d[f"{k}_sd"] = mean_sd(values)
        out.append(d)
    return out


def paired_tests(result: CompareResult, metrics: tuple[str, ...] = STAT_METRICS) -> list[dict[str, Any]]:
    """Each pair of models and metric: paired over the cases both have, mean difference (a - b),
    the two-sided Wilcoxon signed-rank p-value (nan with a note where it is undefined or n < 5),
    the Holm-adjusted p over all rows (``p_holm``) and ``significant`` ("yes"/"no"/"" at ALPHA)."""
    by = {m: {r.case: r for r in rows} for m, rows in result.by_model().items()}
    out = []
    for a, b in itertools.combinations(result.models, 2):
        common = [c for c in result.cases if c in by.get(a, {}) and c in by.get(b, {})]
        for k in metrics:
            pairs = [(by[a][c].metrics.get(k), by[b][c].metrics.get(k)) for c in common]
            pairs = [(x, y) for x, y in pairs if finite(x) and finite(y)]
            xa = np.array([p[0] for p in pairs], float)
            xb = np.array([p[1] for p in pairs], float)
            d = xa - xb
            row: dict[str, Any] = {
                "model_a": a,
                "model_b": b,
                "metric": k,
                "n": len(pairs),
                "mean_a": float(xa.mean()) if len(pairs) else math.nan,
                "mean_b": float(xb.mean()) if len(pairs) else math.nan,
                "mean_difference": float(d.mean()) if len(pairs) else math.nan,
                "statistic": math.nan,
                "p_value": math.nan,
                "p_holm": math.nan,
                "significant": "",
                "note": "",
            }
            if len(pairs) == 0:
                row["note"] = "no paired case"
            elif len(pairs) < MIN_PAIRED_CASES:
                row["note"] = f"n/a (n = {len(pairs)})"
            elif not np.any(d != 0):
                row["note"] = "all differences are zero"
            else:
                # imported only here: scipy.stats's first import is 0.5-1 s, and the review's one-case
                # compare (no test to run) did it on the GUI thread
                from scipy.stats import wilcoxon

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # small-sample notes; the case count is in the row
                    res = wilcoxon(xa, xb, zero_method="wilcox", alternative="two-sided")
                row["statistic"], row["p_value"] = float(res.statistic), float(res.pvalue)
            out.append(row)
    for row, adjusted in zip(out, holm([r["p_value"] for r in out])):
        row["p_holm"] = adjusted
        if finite(adjusted):
            row["significant"] = "yes" if adjusted < ALPHA else "no"
    return out


def diameter_rows(result: CompareResult) -> list[dict[str, Any]]:
    """Per case, model and diameter interval: voxel counts and DSC (percent)."""
    out = []
    for r in result.rows:
        for b in r.metrics.get("dsc_by_diameter", []):
            out.append(
                {
                    "case": r.case,
                    "model": r.model,
                    "interval": b["label"],
                    "low_mm": b["low_mm"],
                    "high_mm": b["high_mm"],
                    "n_branches": b["branches"],
                    "reference_voxels": b["reference_voxels"],
                    "prediction_voxels": b["prediction_voxels"],
                    "overlap_voxels": b["overlap_voxels"],
                    "dsc": b["dsc"],
                }
            )
    return out


def diameter_summary(result: CompareResult) -> list[dict[str, Any]]:
    """Per model and interval: mean and sd of the per-case DSC (cases with voxels there) and the
    pooled DSC (all cases' voxels together)."""
    rows = diameter_rows(result)
    out = []
    for model in result.models:
        mine = [r for r in rows if r["model"] == model]
        for label in dict.fromkeys(r["interval"] for r in mine):
            sel = [r for r in mine if r["interval"] == label]
            m, s = mean_sd([r["dsc"] for r in sel])
            den = sum(r["reference_voxels"] + r["prediction_voxels"] for r in sel)
            pooled = 200.0 * sum(r["overlap_voxels"] for r in sel) / den if den else math.nan
            out.append(
                {
                    "model": model,
                    "interval": label,
                    "low_mm": sel[0]["low_mm"],
                    "high_mm": sel[0]["high_mm"],
                    "n": sum(1 for r in sel if finite(r["dsc"])),
                    "dsc_mean": m,
                    "dsc_sd": s,
                    "dsc_pooled": pooled,
                }
            )
    return out


def generation_rows(result: CompareResult) -> list[dict[str, Any]]:
    out = []
    for r in result.rows:
        for g in r.metrics.get("per_generation", []):
            n, k = g["branches"], g["detected"]
            out.append(
                {
                    "case": r.case,
                    "model": r.model,
                    "generation": g["generation"],
                    "n_branches": n,
                    "n_detected": k,
                    "bd": 100.0 * k / n if n else math.nan,
                }
            )
    return out


def generation_summary(result: CompareResult) -> list[dict[str, Any]]:
    """Per model and generation: mean and sd of per-case BD, and the pooled BD (detected / branches)."""
    rows = generation_rows(result)
    out = []
    for model in result.models:
        mine = [r for r in rows if r["model"] == model]
        for gen in sorted({r["generation"] for r in mine}):
            sel = [r for r in mine if r["generation"] == gen]
            m, s = mean_sd([r["bd"] for r in sel])
            n = sum(r["n_branches"] for r in sel)
            k = sum(r["n_detected"] for r in sel)
            out.append(
                {
                    "model": model,
                    "generation": gen,
                    "n": len(sel),
                    "n_branches": n,
                    "n_detected": k,
                    "bd_mean": m,
                    "bd_sd": s,
                    "bd_pooled": 100.0 * k / n if n else math.nan,
                }
            )
    return out
