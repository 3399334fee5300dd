"""The fine-tuning loop on phantoms: label noise as annotators make it, and a scripted review.

A phantom (core.phantom) knows its whole airway (``full_label``) and can leave distal
branches out of its reference (``omit_distal``): the branches stay in the CT, as a real
annotator's missed branches do. :func:`write_noisy_phantom_dataset` writes such cases in the
nnU-Net layout (``imagesTr``/``labelsTr``, the references missing branches) and the whole
airway of each into a separate truth folder (outside the dataset, so it is never mistaken
for a model's predictions). :func:`review_with_truth` reviews one case through the headless
review session (core.review.session) as an annotator would: the model's false-positive
regions against the reference are listed and each one the truth confirms is accepted
(``Session.accept_many``, what the review tab's A key does), then the reviewed label is
written to ``labelsReviewed/`` with the edit log and the case is marked done.

Used by benchmarks/bench_finetune_gain.py and tests/test_dataset_loop.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError


@dataclass
class ReviewEffort:
    """What the scripted annotator did on one case."""

    case_id: str
    fp_regions: int  # false-positive regions the review listed
    accepted: int  # regions accepted into the reference (confirmed by the truth)
    rejected: int  # regions left as the model's errors
    voxels_added: int  # voxels the accepted regions added to the reference
    seconds: float
    voxels_trimmed: int = 0  # voxels of accepted regions erased again as not airway (trim=True)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def noisy_phantom(
    seed: int, size: int, spacing: tuple[float, float, float], omit_distal: int, difficulty: str = "normal"
) -> Any:
    """A phantom with up to ``omit_distal`` terminal branches left out of its label (fewer when its
    tree has fewer terminal branches below the lobar level)."""
    from core.phantom import make_phantom

    k = int(omit_distal)
    while True:
        try:
            return make_phantom(
                shape=(size, size, size), spacing=spacing, seed=seed, omit_distal=k, difficulty=difficulty
            )
        except ConfigError:
            if k == 0:
                raise
            k -= 1


def write_noisy_phantom_dataset(
    root: str | Path,
    seeds: Sequence[int],
    truth_dir: str | Path,
    *,
    size: int = 48,
    spacing: tuple[float, float, float] = (2.5, 2.5, 3.0),
    omit_distal: int = 12,
    prefix: str = "phantom",
    difficulty: str = "normal",
) -> list[str]:
    """Write one case per seed: ``imagesTr/P_0000.nii.gz``, ``labelsTr/P.nii.gz`` (branches left out)
    and ``truth_dir/P.nii.gz`` (the whole airway); returns the case ids."""
    from core.io import write_volume

    root, truth_dir = Path(root), Path(truth_dir)
    names: list[str] = []
    info: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        name = f"{prefix}_{i:03d}"
        ph = noisy_phantom(int(seed), size, spacing, omit_distal, difficulty)
        assert ph.full_label is not None  # make_phantom always sets it
        write_volume(ph.ct, root / "imagesTr" / f"{name}_0000.nii.gz")
        write_volume(ph.label, root / "labelsTr" / f"{name}.nii.gz")
        write_volume(ph.full_label, truth_dir / f"{name}.nii.gz")
        omitted_voxels = int(np.count_nonzero(ph.full_label.mask & ~ph.label.mask))
        info[name] = {"seed": int(seed), "omitted_branches": len(ph.omitted), "omitted_voxels": omitted_voxels}
        names.append(name)
    truth_dir.mkdir(parents=True, exist_ok=True)
    (truth_dir / "phantoms.json").write_text(
        json.dumps({"size": size, "spacing": list(spacing), "cases": info}, indent=1), encoding="utf-8"
    )
    return names


def review_with_truth(
    dataset: Any,
    case_id: str,
    prediction: str | Path,
    truth: str | Path,
    *,
    min_truth_fraction: float = 0.2,
    reviewer: str = "scripted",
    trim: bool = False,
) -> ReviewEffort:
    """Review one case of a core.dataset.Dataset against a model's prediction, accepting the FP
    regions that show a missed airway: at least ``min_truth_fraction`` of their voxels lie in the truth.
    (A model draws a thin branch a voxel or two thicker than it is, so a region that finds a missed
    branch is mostly wall and lung by count; an annotator accepts it for the branch it shows.)

    The reviewed label and the session's edit log go to ``labelsReviewed/`` and the case's state
    becomes done (reviewer, time spent, open items = regions left). ``trim``: the annotator also erases
    what an accepted region holds beyond the airway (the eraser, one edit per region), as a careful
    annotator trims a prediction-shaped region to the lumen."""
    from core.dataset import set_case, write_reviewed_label
    from core.review.loading import read_label_canonical
    from core.review.session import Session
    from core.volume import LabelVolume

    t0 = time.perf_counter()
    case = dataset.case(case_id)
    session = Session.load(ct=case.image, reference=case.reference, predictions=[prediction], recovery_path=None)
    set_case(dataset, case_id, status="in_review", reviewer=reviewer)
    truth_vol, _ = read_label_canonical(truth, session.ct, "truth")
    truth_mask = np.asarray(truth_vol.mask, dtype=bool)
    session.analyse()
    fp = [r for r in session.regions(0) if r.kind == "FP"]
    confirmed = []
    for region in fp:
        v = region.voxels
        inside = float(truth_mask[v[:, 0], v[:, 1], v[:, 2]].mean()) if len(v) else 0.0
        if inside >= min_truth_fraction:
            confirmed.append(region.key)
    added = trimmed = 0
    if confirmed:
        regions = [session.find_region(k, 0) for k in confirmed]
        edit = session.accept_many(confirmed, 0)
        added = 0 if edit is None else int(edit.added)
        if trim and session.reference is not None:
            for region in regions:
                outside = region.mask() & ~truth_mask[region.box.slices]
                if outside.any():
                    erased = session.paint(session.reference, region.box, outside, False, tool="eraser")
                    trimmed += 0 if erased is None else int(erased.removed)
    reference = session.reference
    assert reference is not None  # loaded above
    mask = LabelVolume(np.asarray(reference.array, dtype=bool), reference.geometry, name=case_id)
    write_reviewed_label(dataset, case_id, mask, list(session.edit_log), reviewer=reviewer)
    seconds = time.perf_counter() - t0
    set_case(
        dataset,
        case_id,
        status="done",
        reviewer=reviewer,
        seconds_spent=seconds,
        open_items=len(fp) - len(confirmed),
        label_version="reviewed",
    )
    return ReviewEffort(case_id, len(fp), len(confirmed), len(fp) - len(confirmed), added, seconds, trimmed)
