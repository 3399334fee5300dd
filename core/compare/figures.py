"""The report's plots as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot,
no global backend: safe inside the Qt app and without a display).

``available()`` is False when matplotlib is missing; callers then leave the
plots out and say so.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(w: float = 6.4, h: float = 3.6) -> Any:
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.path.expanduser("~"), ".cache", "matplotlib"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def dsc_by_diameter_png(summary: list[dict[str, Any]], models: list[str]) -> bytes:
    """Zheng et al. (2021) Fig. 6: mean DSC per airway diameter interval, one line per model (+- sd)."""
    fig = _figure()
    ax = fig.add_subplot(111)
    labels: list[str] = []
    for r in summary:
        if r["interval"] not in labels:
            labels.append(r["interval"])
    x = np.arange(len(labels))
    for k, model in enumerate(models):
        rows = {r["interval"]: r for r in summary if r["model"] == model}
        y = np.array([rows[l]["dsc_mean"] if l in rows else math.nan for l in labels], float)
        e = np.array([rows[l]["dsc_sd"] if l in rows else math.nan for l in labels], float)
        ax.errorbar(
            x + (k - (len(models) - 1) / 2) * 0.04, y, yerr=np.nan_to_num(e), marker="o", capsize=3, label=model
        )
    ax.set_xticks(x, labels)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel("airway diameter")
    ax.set_ylabel("DSC (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("DSC per airway diameter")
    return _png(fig)


def bd_by_generation_png(summary: list[dict[str, Any]], models: list[str]) -> bytes:
    """Branches detected per generation: grouped bars (mean over cases, sd as error bars)."""
    fig = _figure()
    ax = fig.add_subplot(111)
    gens = sorted({r["generation"] for r in summary})
    x = np.arange(len(gens))
    width = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        rows = {r["generation"]: r for r in summary if r["model"] == model}
        y = np.array([rows[g]["bd_mean"] if g in rows else math.nan for g in gens], float)
        e = np.array([rows[g]["bd_sd"] if g in rows else 0.0 for g in gens], float)
        ax.bar(
            x + (k - (len(models) - 1) / 2) * width,
            np.nan_to_num(y),
            width,
            yerr=np.nan_to_num(e),
            capsize=2,
            label=model,
        )
    ax.set_xticks(x, [str(g) for g in gens])
    ax.set_xlabel("generation (trachea 0)")
    ax.set_ylabel("BD (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("Branches detected per generation")
    return _png(fig)
