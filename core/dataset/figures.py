"""Each prediction's TD / BD / DSC / precision against the case's label, recorded in the state file.

The figures are those of ``airway evaluate`` (:func:`core.metrics.evaluate`, ATM'22 definitions, the
prediction's largest 6-connected component). With each model's figures the content keys of the two
masks they came from are stored (``figure_keys[model]``; also ``keys[model]`` and ``keys["reference"]``
or ``keys["reviewed"]``): a pair whose masks did not change since is not evaluated again, and a
reviewed label that changed the reference makes the figures of every model stale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.dataset.layout import Dataset, DatasetCase
from core.dataset.state import FIGURES, read_state, set_figures
from core.errors import AirwayError, Cancelled, InputError

Progress = Callable[[int, int, str], None]


@dataclass
class FigureRecord:
    """What happened to one (case, model) pair."""

    case_id: str
    model: str
    figures: dict[str, float] = field(default_factory=dict)  # percent, FIGURES keys
    status: str = "evaluated"  # "evaluated" | "cached" (masks unchanged since) | "failed"
    reason: str = ""  # why it failed


def _label_of(case: DatasetCase, version: str) -> tuple[Any, str] | None:
    path = case.label(version)
    if path is None:
        return None
    return path, "reviewed" if path == case.reviewed else "reference"


def evaluate_dataset(
    dataset: Dataset,
    *,
    label: str = "best",
    models: Sequence[str] | None = None,
    cases: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[FigureRecord]:
    """Evaluate every prediction of every case that has a ``label`` version (see :meth:`DatasetCase.label`)
    and record the figures; pairs whose masks are unchanged are skipped unless ``force``. A pair that
    cannot be evaluated (another grid, an empty reference, an unreadable file) is recorded as failed with
    its reason, and the rest go on."""
    from core.io import read_label
    from core.metrics import evaluate
    from core.outputs import content_key
    from core.sanity import check_label, raise_errors
    from core.tree import parse_tree
    from core.volume import check_same_grid

    wanted = set(models) if models is not None else None
    unknown = sorted((wanted or set()) - set(dataset.models))
    if unknown:
        raise InputError(
            f"No predictions of model(s) {', '.join(unknown)} in the dataset.",
            f"Its models are {', '.join(dataset.models) or 'none'}.",
            path=dataset.source or dataset.root,
        )
    chosen = [dataset.case(c) for c in cases] if cases is not None else dataset.cases
    state = read_state(dataset)
    todo = [(c, m) for c in chosen for m in sorted(c.predictions) if wanted is None or m in wanted]
    todo = [(c, m) for c, m in todo if c.label(label) is not None]
    out: list[FigureRecord] = []
    done = 0
    for case in chosen:
        mine = [m for c, m in todo if c is case]
        if not mine:
            continue
        found = _label_of(case, label)
        assert found is not None  # todo holds only cases with a label
        path, role = found
        selector = dataset.label_selector if role == "reference" else None
        try:
            ref = read_label(path, selector, allow_empty=False)
            raise_errors(check_label(ref, "reference", path))
        except AirwayError as exc:
            out += [FigureRecord(case.case_id, m, {}, "failed", f"{role}: {exc}") for m in mine]
            done += len(mine)
            continue
        ref_key = content_key(ref)
        tree = None
        cs = state.case(case.case_id)
        for model in mine:
            if cancel is not None and cancel():
                raise Cancelled()
            if progress is not None:
                progress(done, len(todo), f"{case.case_id}: {model}")
            done += 1
            try:
                pred = read_label(case.predictions[model])
                pred_key = content_key(pred)
                cached = cs.figures.get(model)
                measured = cs.figure_keys.get(model, {})
                if (
                    not force
                    and cached is not None
                    and measured.get("prediction") == pred_key
                    and measured.get("label") == ref_key
                ):
                    out.append(FigureRecord(case.case_id, model, dict(cached), "cached"))
                    continue
                check_same_grid(ref, pred)
                if tree is None:
                    tree = parse_tree(ref)
                metrics = evaluate(pred, ref, tree=tree)
            except AirwayError as exc:
                out.append(FigureRecord(case.case_id, model, {}, "failed", str(exc)))
                continue
            version = "reviewed" if role == "reviewed" else "original"
            # an undefined figure (no branch to detect) is left out, not stored as NaN
            figures = {f: float(getattr(metrics, f)) for f in FIGURES if math.isfinite(float(getattr(metrics, f)))}
            set_figures(
                dataset,
                case.case_id,
                model,
                figures,
                keys={model: pred_key, role: ref_key},
                label_version=version,
                figure_keys={"prediction": pred_key, "label": ref_key, "version": version},
            )
            out.append(FigureRecord(case.case_id, model, figures))
    if progress is not None:
        progress(len(todo), len(todo), "done")
    return out
