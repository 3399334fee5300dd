"""The one segmentation route: predict, gate the mask, collect the warnings.

The command line (``airway segment``), the app's child process
(:mod:`core.predict_process`) and its in-process fallback all call
:func:`segment_and_gate`, so a mask is checked and warned about the same way
wherever it was made: the prediction's own sanity (empty, or filling the
volume: core.sanity) and the output gate (does it look like this CT's airway:
core.gate), whose failure names what the model was trained on, or with
``strict`` is a :class:`core.errors.QualityError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.progress import Cancellable, Progress, raise_if_cancelled
from core.volume import IntensityVolume

if TYPE_CHECKING:
    from core.gate import GateReport
    from core.segmentation.predictor import Prediction, Predictor

GATE_MESSAGE = "Checking the mask (trachea, lungs)"


@dataclass
class GatedPrediction:
    """A prediction, the gate's report on it (None when not gated) and the warnings to show with it."""

    prediction: Prediction
    gate: GateReport | None
    warnings: list[str] = field(default_factory=list)

    def gate_dict(self) -> dict[str, Any] | None:
        return None if self.gate is None else self.gate.as_dict()


def segment_and_gate(
    predictor: Predictor,
    ct: IntensityVolume,
    *,
    gate: bool = True,
    strict: bool = False,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
) -> GatedPrediction:
    """Segment ``ct`` with ``predictor``, then check the mask; ``strict``: a failed gate raises
    :class:`core.errors.QualityError` (the caller then writes nothing) instead of becoming a warning."""
    from core.gate import check_mask, enforce
    from core.models.card import card_summary, input_warnings
    from core.sanity import check_label

    # said before the wait, and kept with the mask: a CT far from what the model saw
    # explains a poor mask better than the gate's symptoms do
    warnings = input_warnings(predictor.header, ct.geometry.spacing, ct.shape, resampled=predictor.spacing is not None)
    prediction = predictor.predict(ct, progress=progress, cancel=cancel)
    warnings += [f.message for f in check_label(prediction.mask, "prediction")]
    report = None
    if gate:
        raise_if_cancelled(cancel, "Segmentation cancelled before the mask was checked.")
        if progress is not None:
            progress(1, 1, GATE_MESSAGE)
        report = check_mask(ct, prediction.mask.mask)
        text = enforce(report, card_summary(predictor.header), strict)
        if text:
            warnings.append(text)
    return GatedPrediction(prediction, report, warnings)
