"""A dataset's progress and figures as rows: what ``airway dataset summary`` writes.

Columns use the vocabulary of ``airway evaluate`` / ``airway compare`` (docs/vocabulary.md):
``case``, ``model``, ``td``, ``bd``, ``dsc``, ``precision`` (percent), so the tables join.
"""

from __future__ import annotations

from typing import Any

from core.dataset.layout import Dataset
from core.dataset.state import FIGURES, STATUSES, DatasetState, read_state

COLUMNS = (
    "case",
    "status",
    "reviewer",
    "seconds",
    "label_version",
    "split",
    "open_items",
    "note",
    "updated",
    "model",
    *FIGURES,
)


def summary_rows(dataset: Dataset, state: DatasetState | None = None) -> list[dict[str, Any]]:
    """One row per case and model with figures (one row with an empty ``model`` for a case without figures).

    ``label_version``: the label a model's figures were measured on (as recorded), else the case's."""
    st = state if state is not None else read_state(dataset)
    rows: list[dict[str, Any]] = []
    for case in dataset.cases:
        cs = st.case(case.case_id)
        version = cs.label_version if cs.figures or cs.label_version != "original" else case.label_version
        base: dict[str, Any] = {
            "case": case.case_id,
            "status": cs.status,
            "reviewer": cs.reviewer or "",
            "seconds": round(float(cs.seconds_spent), 1),
            "label_version": version,
            "split": case.split or "",
            "open_items": cs.open_items,
            "note": cs.note,
            "updated": cs.updated,
        }
        models = sorted(cs.figures)
        if not models:
            rows.append({**base, "model": "", **{f: None for f in FIGURES}})
        for model in models:
            figs = cs.figures[model]
            measured_on = cs.figure_keys.get(model, {}).get("version") or version
            rows.append({**base, "label_version": measured_on, "model": model, **{f: figs.get(f) for f in FIGURES}})
    return rows


def status_counts(dataset: Dataset, state: DatasetState | None = None) -> dict[str, int]:
    """``{status: cases}`` for every status (zeros included) over the dataset's cases."""
    st = state if state is not None else read_state(dataset)
    counts = dict.fromkeys(STATUSES, 0)
    for case in dataset.cases:
        counts[st.case(case.case_id).status] += 1
    return counts


def progress_text(counts: dict[str, int]) -> str:
    """``"37 of 150 done, 3 flagged"`` (in review and flagged only when there are some)."""
    total = sum(counts.values())
    text = f"{counts.get('done', 0)} of {total} done"
    if counts.get("in_review"):
        text += f", {counts['in_review']} in review"
    if counts.get("flagged"):
        text += f", {counts['flagged']} flagged"
    return text


def model_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean figures per model over the rows that have them."""
    out: dict[str, dict[str, float | None]] = {}
    for model in sorted({r["model"] for r in rows if r["model"]}):
        mine = [r for r in rows if r["model"] == model]
        means: dict[str, float | None] = {}
        for f in FIGURES:
            vals = [float(r[f]) for r in mine if r[f] is not None]
            means[f] = sum(vals) / len(vals) if vals else None
        means["n"] = float(len(mine))
        out[model] = means
    return out
