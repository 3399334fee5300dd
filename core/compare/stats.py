"""Statistics over cases: per-model mean and sd, paired Wilcoxon signed-rank tests
between models, DSC per airway diameter (Zheng et al. 2021, Fig. 6) and BD per
generation. Standard deviations are the population sd, as ``airway evaluate``."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np

from core.compare.batch import STAT_METRICS, CompareResult, finite


def mean_sd(values: list[float]) -> tuple[float, float]:
    from core.commands.evaluate import mean_std

    return mean_std([v for v in values if finite(v)])


def summary_rows(result: CompareResult, metrics: tuple[str, ...] = STAT_METRICS) -> list[dict]:
    """Per model: ``cases`` and ``<metric>_mean`` / ``<metric>_sd``."""
    out = []
    for model, rows in result.by_model().items():
        d: dict[str, Any] = {"model": model, "cases": len(rows)}
        for k in metrics:
            d[f"{k}_mean"], d[f"{k}_sd"] = mean_sd([r.metrics.get(k) for r in rows])
        out.append(d)
    return out


def paired_tests(result: CompareResult, metrics: tuple[str, ...] = STAT_METRICS) -> list[dict]:
    """Each pair of models and metric: paired over the cases both have, mean difference (a - b)
    and the two-sided Wilcoxon signed-rank p-value (nan with a note where it is undefined)."""
    from scipy.stats import wilcoxon

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
            row = {
                "model_a": a,
                "model_b": b,
                "metric": k,
                "cases": len(pairs),
                "mean_a": float(xa.mean()) if len(pairs) else math.nan,
                "mean_b": float(xb.mean()) if len(pairs) else math.nan,
                "mean_difference": float(d.mean()) if len(pairs) else math.nan,
                "statistic": math.nan,
                "p_value": math.nan,
                "note": "",
            }
            if len(pairs) == 0:
                row["note"] = "no paired case"
            elif not np.any(d != 0):
                row["note"] = "all differences are zero"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # small-sample notes; the case count is in the row
                    res = wilcoxon(xa, xb, zero_method="wilcox", alternative="two-sided")
                row["statistic"], row["p_value"] = float(res.statistic), float(res.pvalue)
                if len(pairs) < 6:
                    row["note"] = f"only {len(pairs)} cases: p cannot be small"
            out.append(row)
    return out


def diameter_rows(result: CompareResult) -> list[dict]:
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
                    "branches": b["branches"],
                    "reference_voxels": b["reference_voxels"],
                    "prediction_voxels": b["prediction_voxels"],
                    "overlap_voxels": b["overlap_voxels"],
                    "dsc": b["dsc"],
                }
            )
    return out


def diameter_summary(result: CompareResult) -> list[dict]:
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
                    "cases": sum(1 for r in sel if finite(r["dsc"])),
                    "dsc_mean": m,
                    "dsc_sd": s,
                    "dsc_pooled": pooled,
                }
            )
    return out


def generation_rows(result: CompareResult) -> list[dict]:
    out = []
    for r in result.rows:
        for g in r.metrics.get("per_generation", []):
            n, k = g["branches"], g["detected"]
            out.append(
                {
                    "case": r.case,
                    "model": r.model,
                    "generation": g["generation"],
                    "branches": n,
                    "detected": k,
                    "bd": 100.0 * k / n if n else math.nan,
                }
            )
    return out


def generation_summary(result: CompareResult) -> list[dict]:
    """Per model and generation: mean and sd of per-case BD, and the pooled BD (detected / branches)."""
    rows = generation_rows(result)
    out = []
    for model in result.models:
        mine = [r for r in rows if r["model"] == model]
        for gen in sorted({r["generation"] for r in mine}):
            sel = [r for r in mine if r["generation"] == gen]
            m, s = mean_sd([r["bd"] for r in sel])
            n = sum(r["branches"] for r in sel)
            k = sum(r["detected"] for r in sel)
            out.append(
                {
                    "model": model,
                    "generation": gen,
                    "cases": len(sel),
                    "branches": n,
                    "detected": k,
                    "bd_mean": m,
                    "bd_sd": s,
                    "bd_pooled": 100.0 * k / n if n else math.nan,
                }
            )
    return out
