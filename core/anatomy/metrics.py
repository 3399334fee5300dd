"""TD and BD per lobe, and which segmental bronchi a prediction detects, by the reference's names.

The per-branch detection is ``core.metrics``' own (ATM'22: a branch counts when at least
``DETECTION_THRESHOLD`` of its centreline voxels are predicted, on the prediction's largest
component), so the rows add up to the overall figures: every reference branch falls in exactly
one row, a lobe (``RUL`` ... ``LLL``: the branch's lobe, inherited from its lobar bronchus),
``central`` (trachea, main bronchi, bronchus intermedius) or ``unnamed`` (the labeller abstained
on its lobe). Branch counts over the rows sum to ``n_branches`` / ``n_detected``, and TD weighted
by each row's centreline voxels gives the overall (exact) TD back.

A row without any reference branch (the lobe was not found in the reference) has TD and BD
``nan``: shown as "n/a", never as 0 or 100. The segmental bronchi are those the REFERENCE names;
one counts as detected when the branches carrying its name have, pooled, the threshold share of
their centreline predicted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.anatomy.names import CENTRAL, LOBES, is_segmental
from core.metrics import DETECTION_THRESHOLD, AirwayMetrics, evaluate

if TYPE_CHECKING:
    from core.tree import AirwayTree

LOBE_ROWS: tuple[str, ...] = LOBES
CENTRAL_ROW = "central"
UNNAMED_ROW = "unnamed"
ROWS: tuple[str, ...] = (*LOBE_ROWS, CENTRAL_ROW, UNNAMED_ROW)
CENTRAL_NAMES: frozenset[str] = frozenset(CENTRAL)
# RB1..RB10, LB1+2, LB3..LB10 and merged variants (RB9+10, LB7+8, ...), for their order
_SEGMENTAL = re.compile(r"^([RL])B(\d+)((?:\+\d+)*)$")


class Names(Protocol):
    """What the figures need of ``core.anatomy.TreeNames``."""

    def name_of(self, branch_id: int) -> str | None: ...

    def lobe_of(self, branch_id: int) -> str | None: ...


def segment_order(name: str) -> tuple[int, int, str]:
    """RB1 ... RB10 before LB1+2 ... LB10 (numeric, not string, order)."""
    m = _SEGMENTAL.match(name)
    if m is None:
        return (2, 0, name)
    return (0 if m.group(1) == "R" else 1, int(m.group(2)), name)


@dataclass(frozen=True)
class BranchCount:
    """One reference branch as scored by ``core.metrics`` (the fields of its BranchResult the rows need)."""

    id: int
    centreline_voxels: int
    detected_voxels: int
    detected: bool
    length_mm: float = 0.0


@dataclass
class LobeFigures:
    lobe: str  # a lobe of LOBE_ROWS, "central" or "unnamed"
    td: float  # percent of the row's centreline voxels predicted; nan (n/a) when the row has none
    bd: float  # percent of the row's branches detected; nan (n/a) when the row has no branch
    branches: int
    detected: int
    length_mm: float  # reference centreline length of the row's branches
    centreline_voxels: int = 0
    detected_voxels: int = 0

    @property
    def found(self) -> bool:
        """The reference has branches here (else the figures are n/a)."""
        return self.branches > 0


@dataclass
class SegmentalFigures:
    detected: list[str] = field(default_factory=list)  # names of the reference's segmental bronchi
    missed: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.detected) + len(self.missed)


@dataclass
class AnatomyScores:
    lobes: list[LobeFigures]
    segmental: SegmentalFigures

    def row(self, lobe: str) -> LobeFigures | None:
        return next((r for r in self.lobes if r.lobe == lobe), None)

    def sentence(self) -> str:
        """ "segmental bronchi detected 18 / 20; missed RB7, LB9"."""
        s = self.segmental
        if not s.total:
            return "segmental bronchi: none named in the reference"
        text = f"segmental bronchi detected {len(s.detected)} / {s.total}"
        return text + (f"; missed {', '.join(s.missed)}" if s.missed else "")

    def missed_lobes(self) -> list[str]:
        """Lobes the reference has where the prediction detects no branch at all."""
        return [r.lobe for r in self.lobes if r.lobe in LOBE_ROWS and r.found and r.detected == 0]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (nan stays a float: callers that write strict JSON turn it into null)."""
        return {
            "lobes": [asdict(r) for r in self.lobes],
            "segmental": {"detected": list(self.segmental.detected), "missed": list(self.segmental.missed)},
            "sentence": self.sentence(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnatomyScores:
        def num(v: Any) -> float:
            return math.nan if v is None else float(v)

        lobes = [
            LobeFigures(
                lobe=str(r["lobe"]),
                td=num(r.get("td")),
                bd=num(r.get("bd")),
                branches=int(r["branches"]),
                detected=int(r["detected"]),
                length_mm=float(r.get("length_mm") or 0.0),
                centreline_voxels=int(r.get("centreline_voxels") or 0),
                detected_voxels=int(r.get("detected_voxels") or 0),
            )
            for r in d.get("lobes", [])
        ]
        seg = d.get("segmental", {})
        return cls(lobes, SegmentalFigures(list(seg.get("detected", [])), list(seg.get("missed", []))))


def row_of(names: Names, branch_id: int) -> str:
    """The row a reference branch counts in: its lobe, ``central`` or ``unnamed``."""
    lobe = names.lobe_of(branch_id)
    if lobe in LOBE_ROWS:
        return str(lobe)
    if names.name_of(branch_id) in CENTRAL_NAMES:
        return CENTRAL_ROW
    return UNNAMED_ROW


def scores_from_counts(counts: Iterable[BranchCount], names: Names, *, threshold: float) -> AnatomyScores:
    """The figures from per-branch detection already computed (``core.metrics``' BranchResults,
    or the counts ``airway compare`` caches)."""
    rows = {r: [0, 0, 0.0, 0, 0] for r in ROWS}  # branches, detected, length, centreline, hit
    by_name: dict[str, list[int]] = {}  # segmental name -> [centreline voxels, detected voxels]
    for b in counts:
        acc = rows[row_of(names, b.id)]
        acc[0] += 1
        acc[1] += int(b.detected)
        acc[2] += float(b.length_mm)
        acc[3] += int(b.centreline_voxels)
        acc[4] += int(b.detected_voxels)
        name = names.name_of(b.id)
        if name is not None and is_segmental(name):  # the reference's names decide
            pooled = by_name.setdefault(name, [0, 0])
            pooled[0] += int(b.centreline_voxels)
            pooled[1] += int(b.detected_voxels)
    lobes = []
    for r in ROWS:
        n, k, length, cv, hit = rows[r]
        lobes.append(
            LobeFigures(
                lobe=r,
                td=100.0 * hit / cv if cv else math.nan,
                bd=100.0 * k / n if n else math.nan,
                branches=int(n),
                detected=int(k),
                length_mm=float(length),
                centreline_voxels=int(cv),
                detected_voxels=int(hit),
            )
        )
    seg = SegmentalFigures()
    for name in sorted(by_name, key=segment_order):
        cv, hit = by_name[name]
        # as core.metrics: a bronchus without centreline voxels counts as missed
        (seg.detected if cv and hit / cv >= threshold else seg.missed).append(name)
    return AnatomyScores(lobes, seg)


def counts_of(metrics: AirwayMetrics) -> list[BranchCount]:
    return [
        BranchCount(b.id, b.centreline_voxels, b.detected_voxels, b.detected, b.length_mm) for b in metrics.branches
    ]


def anatomy_scores(
    reference_tree: AirwayTree,
    reference_names: Names,
    prediction: np.ndarray | AirwayMetrics | Any,
    *,
    threshold: float = DETECTION_THRESHOLD,
    connectivity: int = 6,
    largest_component: bool = True,
) -> AnatomyScores:
    """TD/BD per lobe and the segmental bronchi detected, of a prediction against the named reference.

    ``prediction``: the predicted mask (array or LabelVolume on the reference's grid), scored by
    ``core.metrics.evaluate``, or the ``AirwayMetrics`` that scored it already (its threshold then
    applies, so the figures add up to it).
    """
    if isinstance(prediction, AirwayMetrics):
        metrics = prediction
        threshold = prediction.detection_threshold
    else:
        metrics = evaluate(
            prediction,
            reference_tree,
            tree=reference_tree,
            connectivity=connectivity,
            largest_component=largest_component,
            detection_threshold=threshold,
            diameter_edges=(0.0,),
        )
    return scores_from_counts(counts_of(metrics), reference_names, threshold=threshold)


def branch_counts_record(metrics: AirwayMetrics) -> dict[str, list[float]]:
    """Per branch id: [centreline voxels, detected voxels, length mm], JSON-able, for a cached record."""
    return {str(b.id): [b.centreline_voxels, b.detected_voxels, b.length_mm] for b in metrics.branches}


def counts_from_record(record: dict[str, Any]) -> list[BranchCount] | None:
    """The counts a compare record keeps (``branch_counts`` + ``branches_detected``); None when it has none."""
    raw = record.get("branch_counts")
    detected = record.get("branches_detected")
    if not isinstance(raw, dict) or not isinstance(detected, dict):
        return None
    out = []
    for key, v in raw.items():
        cv, hit, length = v
        out.append(BranchCount(int(key), int(cv), int(hit), bool(detected.get(key, False)), float(length)))
    return sorted(out, key=lambda b: b.id)


def mean_rows(scores: Sequence[AnatomyScores]) -> dict[str, tuple[float, float, int]]:
    """Per row: (mean TD, mean BD, cases where the row is found) over cases; nan where never found."""
    out: dict[str, tuple[float, float, int]] = {}
    for r in ROWS:
        found = [row for s in scores if (row := s.row(r)) is not None and row.found]
        if found:
            out[r] = (float(np.mean([x.td for x in found])), float(np.mean([x.bd for x in found])), len(found))
        else:
            out[r] = (math.nan, math.nan, 0)
    return out
