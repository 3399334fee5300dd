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


def unjudged_mask(
    label: Path,
    predictions: dict[str, Path],
    statuses: dict[str, dict[str, str]],
    *,
    progress: Any = None,
    cancel: Any = None,
) -> tuple[np.ndarray, int, int]:
    """(bool mask on ``label``'s file grid of the voxels of every unjudged error region, regions
    listed, regions judged). ``statuses``: model -> {region key: status}, as the state file keeps them."""
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
    canonical = np.zeros(reference.shape, dtype=bool)
    listed = judged = 0
    for i, model in enumerate(models):
        table = statuses.get(model) or {}
        for region in session.regions(i):
            listed += 1
            if table.get(region.key) in JUDGED:
                judged += 1
                continue
            canonical[tuple(np.asarray(region.voxels).T)] = True
    return reference.source.to_file_array(canonical, bool), listed, judged


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
    from core.io import read_volume, write_volume
    from core.volume import LabelVolume

    src = read_volume(label)
    open_voxels, listed, judged = unjudged_mask(label, predictions, statuses)
    out = (np.asarray(src.array) != 0).astype(np.uint8)
    out[open_voxels] = ignore_value
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_volume(LabelVolume(out, src.geometry, name=case_id), dst)
    return IgnoredRegions(case_id, list(predictions), listed, judged, int(open_voxels.sum()), str(dst))
