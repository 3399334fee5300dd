"""The ignore label of ``airway train --dataset ... --ignore-unreviewed``.

A reviewed label is trusted where the reviewer looked. What the reviewer looked at is what the app
listed: each model's error regions against the label (the review session's own analysis,
:class:`core.review.Session`, so the region keys are the app's), with the statuses the dataset's
state file keeps per case and model (``view.statuses``). A region confirmed as the model's error
or marked a reference error was judged; every other one (no status, unreviewed, flagged) is an
open question. Its voxels get ``ignore_value`` in the run's label: neither airway nor background
to the losses (``data.ignore_value``, :mod:`core.training.cache`). Regions the reviewer accepted
or rejected are gone from the list by then: the label holds the answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.volume import LabelVolume

#: statuses (core.review.STATUSES) that say a reviewer judged a region
JUDGED = ("confirmed", "reference_error")
#: the label value of the unjudged voxels in a run's label
IGNORE_VALUE = 2


@dataclass(frozen=True)
class IgnoredRegions:
    """What ``--ignore-unreviewed`` left out of one case's label."""

    case_id: str
    models: list[str]  # the models whose error regions were listed
    regions: int  # error regions listed, all models
    judged: int
    ignored_voxels: int
    label: str  # the run's label file (1 airway, IGNORE_VALUE open)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ignore_label(
    label: Path,
    predictions: dict[str, Path],
    statuses: dict[str, dict[str, str]],
    *,
    ignore_value: int = IGNORE_VALUE,
    progress: Any = None,
    cancel: Any = None,
) -> tuple[LabelVolume, int, int]:
    """(``label`` on its file's grid as uint8, 1 airway and ``ignore_value`` on the voxels of every
    unjudged error region, regions listed, regions judged). ``statuses``: model -> {region key:
    status}, as the state file keeps them. The label is read once, by the review session."""
    from core.review import Session

    models = list(predictions)
    session = Session.load(
        None, label, [predictions[m] for m in models], recovery_path=None, progress=progress, cancel=cancel
    )
    # the dataset names a prediction layer by its model, as the app does (core.dataset, app.dataset)
    for layer, model in zip(list(session.predictions), models):
        if layer.name != model:
            session.rename_layer(layer, model)
    session.analyse(progress, cancel)
    reference = session.reference
    assert reference is not None  # loaded from ``label`` above
    out = reference.array.astype(np.uint8)
    listed = judged = 0
    for i, model in enumerate(models):
        table = statuses.get(model) or {}
        for region in session.regions(i):
            listed += 1
            if table.get(region.key) in JUDGED:
                judged += 1
                continue
            out[tuple(np.asarray(region.voxels).T)] = ignore_value
    src = reference.source
    return LabelVolume(src.to_file_array(out), src.geometry), listed, judged


def write_ignore_label(
    case_id: str,
    label: Path,
    predictions: dict[str, Path],
    statuses: dict[str, dict[str, str]],
    dst: Path,
    *,
    ignore_value: int = IGNORE_VALUE,
) -> IgnoredRegions:
    """``label`` (a 0/1 reviewed mask) with ``ignore_value`` on its unjudged error regions, written to ``dst``."""
    from core.io import write_volume

    out, listed, judged = ignore_label(label, predictions, statuses, ignore_value=ignore_value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_volume(LabelVolume(out.array, out.geometry, name=case_id), dst)
    ignored = int(np.count_nonzero(out.array == ignore_value))
    return IgnoredRegions(case_id, list(predictions), listed, judged, ignored, str(dst))
