"""Every case x model evaluated against the reference, with ``airway evaluate``'s code
path (:func:`core.compare.pair.evaluate_pair`), cached by content.

The reference of a case is read and its tree parsed (or loaded from the cache)
at most once, and only when some model of the case is not served from the
cache. A case or model that fails is recorded as a :class:`Failure` and the
rest go on; ``Cancelled`` stops the whole run.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from core.anatomy.metrics import branch_counts_record
from core.casenames import expected_names, missing_message, no_match_error
from core.compare.cache import Cache, mask_key, text_key
from core.compare.cases import CaseFiles, match_cases, match_models
from core.errors import AirwayError, Cancelled, InputError
from core.progress import Progress

# part of the key of a reference's cached names: bump when the labeller names differently
NAMES_VERSION = 1


@functools.cache
def labeller_digest() -> str:
    """Digest of the labeller's source: cached names of an older labeller are never served."""
    import core.anatomy

    root = Path(core.anatomy.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.glob("*.py")):
        if f.name != "metrics.py":  # the figures are computed anew every run
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


# metrics.csv columns: (column, key in AirwayMetrics.summary())
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("td", "td"),
    ("bd", "bd"),
    ("dsc", "dsc"),
    ("precision", "precision"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("atm_score", "atm_score"),
    ("n_branches", "n_branches"),
    ("n_detected", "n_detected"),
    ("td_mm", "td_mm"),
    ("tree_length_mm", "tree_length_mm"),
    ("leakage", "leakage"),
    ("missing_ratio", "missing_ratio"),
    ("breakages", "breakages"),
)
# the metrics summarised per model and tested between models (percent)
STAT_METRICS: tuple[str, ...] = (
    "td",
    "bd",
    "dsc",
    "precision",
    "sensitivity",
    "specificity",
    "atm_score",
    "leakage",
    "missing_ratio",
    "td_mm",
)


@dataclass
class CompareSettings:
    atm22: bool = False
    connectivity: int = 6
    detection_threshold: float = 0.8
    diameter_edges: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0)
    label_selector: str | None = None
    prediction_selector: str | None = None
    # TD/BD per lobe and the segmental bronchi detected (core.anatomy); off skips naming the references
    anatomy: bool = True

    def evaluation_key(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("label_selector")  # part of the reference's own key
        d.pop("prediction_selector")
        d.pop("anatomy")  # computed beside the cached record, from the reference's cached names
        d["diameter_edges"] = [float(e) for e in self.diameter_edges]
        return d


@dataclass
class CaseRow:
    case: str
    model: str
    metrics: dict[str, Any]  # summary scalars + per_generation + dsc_by_diameter + counts
    reference: str = ""
    prediction: str = ""
    reference_key: str = ""
    prediction_key: str = ""
    cached: bool = False
    # SHA-256 of the files' bytes when they were scored: the app tells a changed file by them
    reference_digest: str = ""
    prediction_digest: str = ""

    def value(self, column: str) -> Any:
        key = dict(METRIC_COLUMNS).get(column, column)
        return self.metrics.get(key)


@dataclass
class Failure:
    case: str
    model: str
    message: str


@dataclass
class CompareResult:
    models: list[str]
    cases: list[str]
    rows: list[CaseRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    settings: CompareSettings = field(default_factory=CompareSettings)
    cache_stats: dict[str, Any] = field(default_factory=dict)
    reference_dir: str = ""
    sources: dict[str, Any] = field(default_factory=dict)  # model -> folder or checkpoint
    ct_dir: str = ""  # CTs of the cases, when known (--cts)
    notes: list[str] = field(default_factory=list)  # e.g. which names a model's folder was missing
    # the output gate (core.gate) of each model run here: model -> case -> GateReport.as_dict()
    gate: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def row(self, case: str, model: str) -> CaseRow | None:
        for r in self.rows:
            if r.case == case and r.model == model:
                return r
        return None

    def gate_failed_everywhere(self) -> list[str]:
        """Models whose masks failed the output gate on every case the gate saw."""
        return [m for m, per in self.gate.items() if per and not any(g.get("passed") for g in per.values())]

    def by_model(self) -> dict[str, list[CaseRow]]:
        out: dict[str, list[CaseRow]] = {m: [] for m in self.models}
        for r in self.rows:
            out.setdefault(r.model, []).append(r)
        return out


def metrics_record(m: Any) -> dict[str, Any]:
    """What the compare keeps of an ``AirwayMetrics`` (JSON-able; inf/nan kept as floats)."""
    d: dict[str, Any] = dict(m.summary())
    d["mode"] = m.mode
    d["counts"] = dict(m.counts)
    d["per_generation"] = [asdict(g) for g in m.per_generation]
    d["dsc_by_diameter"] = [{**asdict(b), "label": b.label} for b in m.dsc_by_diameter]
    d["branches_detected"] = {str(b.id): bool(b.detected) for b in m.branches}
    d["branch_counts"] = branch_counts_record(m)  # the per-lobe figures are computed from these
    return d


def usable(record: Any, settings: CompareSettings) -> bool:
    """A cached record serves this run (one cached before the per-lobe figures lacks their counts)."""
    return record is not None and (not settings.anatomy or "branch_counts" in record)


class _Reference:
    """A case's reference, read and parsed on first use only."""

    def __init__(
        self, path: Path, settings: CompareSettings, cache: Cache, progress: Progress | None, volume: Any = None
    ):
        self.path, self.settings, self.cache, self.progress = path, settings, cache, progress
        self.volume: Any = None  # core.volume.LabelVolume once loaded
        self._given = volume  # already read by the caller (as read_label reads it): not read again
        self.tree: Any = None  # core.tree.AirwayTree once loaded
        self.key = cache.known_key(path, f"label:{settings.label_selector}")
        self.names: Any = None  # core.anatomy.TreeNames once named
        self.names_error: str | None = None

    def load(self) -> None:
        if self.volume is not None:
            return
        from core.io import read_label

        if self._given is not None:
            self.volume, self._given = self._given, None
        else:
            self.volume = read_label(self.path, self.settings.label_selector, allow_empty=False)
        self.key = mask_key(self.volume, self.settings.label_selector)
        self.cache.remember_key(self.path, self.key, f"label:{self.settings.label_selector}")
        tree_path = self.cache.path("trees", f"{self.key}.npz")
        if tree_path is not None:
            tree_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache.stats["trees_hits" if tree_path.exists() else "trees_parsed"] += 1
        else:
            self.cache.stats["trees_parsed"] += 1
        self.tree = _cached_tree(self.volume, tree_path)

    def named(self, cancel: Any = None) -> Any:
        """The reference's branch names, labelled once per reference content (cached as ``names``);
        None (with ``names_error``) when the labeller fails on it."""
        if self.names is not None or self.names_error is not None:
            return self.names
        from core.anatomy import TreeNames

        key = text_key("names", self.key, NAMES_VERSION, labeller_digest()) if self.key is not None else None
        doc = self.cache.get_json("names", key) if key is not None else None
        if doc is not None:
            try:
                self.names = TreeNames.from_json(doc)
                return self.names
            except (AirwayError, KeyError, TypeError, ValueError):
                pass  # written by another version: label again
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        self.load()
        key = text_key("names", self.key, NAMES_VERSION, labeller_digest())
        try:
            from core.anatomy import label_tree

            self.names = label_tree(self.tree, geometry=self.volume.geometry)  # directions in the patient frame
        except Cancelled:
            raise
        except (AirwayError, ValueError, IndexError, MemoryError) as exc:
            self.names_error = _message(exc)
            return None
        self.cache.put_json("names", key, self.names.to_json())
        self.cache.stats["names_labelled"] += 1
        return self.names


def reference_tree(
    path: str | Path, volume: Any, settings: CompareSettings, cache: Cache, cancel: Any = None
) -> tuple[Any, Any]:
    """(tree, names) of a case's reference ``volume`` (read from ``path`` with the settings' label
    selector), as a compare parses and names it: from ``cache`` when it holds them (an `airway
    compare` folder's ``.cache``), else parsed and labelled now and kept there. Names are None when
    the labeller fails on the tree."""
    ref = _Reference(Path(path), settings, cache, None, volume=volume)
    ref.load()
    return ref.tree, ref.named(cancel=cancel)


def _cached_tree(volume: Any, tree_path: Path | None) -> Any:
    """The reference's tree, parsed once: the cache file is named by the mask's content key, and the
    key recorded inside it (core.outputs.content_key) must match too, or it is parsed again."""
    from core.outputs import content_key
    from core.tree import AirwayTree, parse_tree

    key = content_key(volume)
    if tree_path is not None and tree_path.exists():
        tree = AirwayTree.load(tree_path)
        if tree.params.get("source_key") == key:
            return tree
    tree = parse_tree(volume)
    tree.params["source_key"] = key
    if tree_path is not None:
        tree.save(tree_path)  # atomic
    return tree


def compare_folders(
    reference_dir: str | Path,
    predictions: Mapping[str, str | Path],
    *,
    settings: CompareSettings | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    cancel: Any = None,
    allow_missing: bool = False,
) -> CompareResult:
    """Evaluate each model's predictions folder against ``reference_dir`` (cases matched by
    :mod:`core.casenames`). A model matching no case is an InputError naming the names expected
    and found, unless ``allow_missing``; a model matching only some cases gets a note."""
    settings = settings or CompareSettings()
    if not predictions:
        raise InputError("No model to compare.", "Give at least one NAME=DIR of predictions.")
    ref_dir = Path(reference_dir).absolute()  # rows keep paths the app can reopen from anywhere
    if not ref_dir.is_dir():
        raise InputError(
            "The reference folder does not exist.", "Give --reference REF_DIR (a folder of labels).", path=ref_dir
        )
    preds = {m: Path(d).absolute() for m, d in predictions.items()}
    for m, d in preds.items():
        if not d.is_dir():
            raise InputError(
                f"Predictions folder of model '{m}' does not exist.", "Give NAME=DIR with an existing folder.", path=d
            )
    cases = match_cases(ref_dir, preds)
    if not cases:
        raise InputError(
            "The reference folder holds no label volume.", "Give a folder of .nii.gz/.mha/.nrrd labels.", path=ref_dir
        )
    notes = []
    for match in match_models(ref_dir, preds).values():
        if match.matched == 0 and not allow_missing:
            raise no_match_error(match)
        if match.missing:
            notes.append(missing_message(match))
    cache = Cache(cache_dir)
    result = CompareResult(
        models=list(preds),
        cases=[c.name for c in cases],
        settings=settings,
        reference_dir=str(ref_dir),
        sources={m: str(d) for m, d in preds.items()},
        notes=notes,
    )
    total = len(cases) * len(preds)
    done = 0
    try:
        for case in cases:
            done = _run_case(case, settings, cache, result, progress, cancel, done, total)
    finally:
        cache.save()
    result.cache_stats = dict(cache.stats)
    if not result.rows:
        first = result.failures[0].message if result.failures else "no case"
        raise InputError(f"No case could be evaluated ({first}).", "Check the names and grids of the files.")
    return result


def _run_case(
    case: CaseFiles,
    settings: CompareSettings,
    cache: Cache,
    result: CompareResult,
    progress: Progress | None,
    cancel: Any,
    done: int,
    total: int,
) -> int:
    if case.reference is None:  # compare_folders lists the reference's cases: never without one
        raise InputError(f"Case '{case.name}' has no reference file.", "Give a folder of reference labels.")
    ref = _Reference(case.reference, settings, cache, progress)
    ref_error: str | None = None
    eval_key = settings.evaluation_key()
    for model, path in case.predictions.items():
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress is not None:
            progress(done, total, f"{case.name} / {model}")
        done += 1
        if path is None:
            names = " or ".join(expected_names(case.name))
            result.failures.append(Failure(case.name, model, f"no prediction file for this case (expected {names})"))
            continue
        if ref_error is not None:
            result.failures.append(Failure(case.name, model, f"reference: {ref_error}"))
            continue
        tag = f"label:{settings.prediction_selector}"
        try:
            pred_key = cache.known_key(path, tag)
            record = None
            if ref.key is not None and pred_key is not None:
                record = cache.get_json("metrics", text_key("metrics", ref.key, pred_key, eval_key))
                if not usable(record, settings):
                    record = None
            cached = record is not None
            if record is None:
                try:
                    ref.load()
                except Cancelled:
                    raise
                except (AirwayError, OSError, ValueError, MemoryError) as exc:
                    ref_error = _message(exc)
                    result.failures.append(Failure(case.name, model, f"reference: {ref_error}"))
                    continue
                record, pred_key, cached = _evaluate(ref, path, settings, cache, eval_key, cancel)
            if settings.anatomy:
                record = _with_anatomy(record, ref, settings, result, case.name, cancel)
            result.rows.append(
                CaseRow(
                    case.name,
                    model,
                    record,
                    str(case.reference),
                    str(path),
                    ref.key or "",
                    pred_key or "",
                    cached,
                    cache.digest(case.reference),
                    cache.digest(path),
                )
            )
        except Cancelled:
            raise
        except (AirwayError, OSError, ValueError, MemoryError) as exc:
            result.failures.append(Failure(case.name, model, _message(exc)))
    if progress is not None:
        progress(done, total, f"{case.name} done")
    return done


def _evaluate(
    ref: _Reference, path: Path, settings: CompareSettings, cache: Cache, eval_key: dict[str, Any], cancel: Any
) -> tuple[dict[str, Any], str, bool]:
    from core.compare.pair import evaluate_pair
    from core.io import read_label

    pred = read_label(path, settings.prediction_selector, reference=ref.volume)
    pred_key = mask_key(pred, settings.prediction_selector)
    cache.remember_key(path, pred_key, f"label:{settings.prediction_selector}")
    key = text_key("metrics", ref.key, pred_key, eval_key)
    record = cache.get_json("metrics", key)  # same content under another name or date
    if usable(record, settings):
        return record, pred_key, True
    m = evaluate_pair(
        pred,
        ref.volume,
        ref.tree,
        atm22=settings.atm22,
        connectivity=settings.connectivity,
        threshold=settings.detection_threshold,
        diameter_edges=settings.diameter_edges,
        cancel=cancel,
    )
    record = metrics_record(m)
    cache.put_json("metrics", key, record)
    cache.stats["evaluated"] += 1
    return record, pred_key, False


def _with_anatomy(
    record: dict[str, Any], ref: _Reference, settings: CompareSettings, result: CompareResult, case: str, cancel: Any
) -> dict[str, Any]:
    """The record with ``anatomy`` (core.anatomy.metrics.AnatomyScores.as_dict()) added, from the
    reference's names and the record's per-branch counts: the same detection as the overall figures."""
    from core.anatomy.metrics import counts_from_record, scores_from_counts

    names = ref.named(cancel)
    counts = counts_from_record(record)
    if names is None or counts is None:
        note = f"{case}: no per-lobe figures: the reference could not be named ({ref.names_error})"
        if ref.names_error is not None and note not in result.notes:
            result.notes.append(note)
        return record
    scores = scores_from_counts(counts, names, threshold=settings.detection_threshold)
    return {**record, "anatomy": scores.as_dict()}


def _message(exc: BaseException) -> str:
    if isinstance(exc, AirwayError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"


def finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
