"""What the trainer tells the user besides numbers: a smoothed ETA and warnings a user can act on.

Pure functions and a small class, no torch: the trainer calls them, tests feed them numbers.

- :class:`EtaEstimator`: the time left, from a robust, smoothed epoch time. The
  earlier estimate (the last epoch's time x the epochs left) jumped whenever one
  epoch was slow (a validation, the stage-0 hard-sample pass, another job on the
  machine): 2m47s -> 5m17s -> 2m50s.
- :func:`oversegmentation_warning`: a model that marks most of the volume as
  airway detects every branch (TD and BD 100 %) while its Dice is near 0; the
  validation curves then look like success. Warn when it marks more than
  :data:`MAX_MARKED_FRACTION` of the volume or more than :data:`MAX_LABEL_MULTIPLE`
  times the labelled airway.
- :func:`hard_sampling_message`: what stage 0's misses mean for stage 1, in words.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

#: Warn when a model marks more than this fraction of a validation volume as airway ...
MAX_MARKED_FRACTION = 0.5
#: ... or more than this many times the labelled airway's volume.
MAX_LABEL_MULTIPLE = 10.0
#: Stage 0 missing at least this share of the centreline learned too little to guide hard sampling.
HARD_MISS_WARN_FRACTION = 0.5


class EtaEstimator:
    """Time left in a run from its epoch times, without jumps.

    Each epoch's time is one sample; the estimate of an epoch's time is the
    median of the last ``window`` samples (an isolated slow or fast epoch does
    not move it), smoothed by an exponential moving average with weight
    ``alpha`` (a lasting change of speed is followed within a few epochs).
    ETA = epochs left x that estimate.
    """

    def __init__(self, window: int = 5, alpha: float = 0.3):
        self.samples: deque[float] = deque(maxlen=max(1, window))
        self.alpha = alpha
        self.epoch_s: float | None = None

    def add(self, epoch_seconds: float) -> float:
        """Record one epoch's time; returns the smoothed time per epoch."""
        if epoch_seconds > 0 and epoch_seconds == epoch_seconds:  # skip 0 and NaN
            self.samples.append(float(epoch_seconds))
        if not self.samples:
            return self.epoch_s or 0.0
        robust = statistics.median(self.samples)
        self.epoch_s = robust if self.epoch_s is None else self.alpha * robust + (1 - self.alpha) * self.epoch_s
        return self.epoch_s

    def eta(self, epochs_left: float) -> float:
        """Seconds left for ``epochs_left`` more epochs (0 when none are left or nothing is known yet)."""
        if self.epoch_s is None or epochs_left <= 0:
            return 0.0
        return float(epochs_left) * self.epoch_s


@dataclass(frozen=True)
class Marked:
    """How much of the validation volumes a model marked as airway (means over the cases)."""

    fraction: float  # of the volume, 0..1
    to_label: float  # marked voxels / labelled voxels

    @classmethod
    def of(cls, marked: int, label: int, total: int) -> Marked:
        return cls(marked / max(total, 1), marked / max(label, 1))


def oversegmentation_warning(stage: int, epoch: int, marked: Marked, dsc: float) -> str | None:
    """One line when the model marks too much as airway (None when it does not); ``epoch`` from 1."""
    too_much = marked.fraction > MAX_MARKED_FRACTION
    too_many = marked.to_label > MAX_LABEL_MULTIPLE
    if not (too_much or too_many):
        return None
    return (
        f"Validation after stage {stage}, epoch {epoch}: the model marks {100 * marked.fraction:.0f} % of the "
        f"validation volumes as airway, {marked.to_label:.0f} times the labelled airway (DSC {dsc:.1f} %). "
        "TD and BD near 100 % mean nothing here: marking everything detects every branch. "
        "Early in a run this often passes; if it persists, lower the learning rate (stageN.lr), "
        "check that the labels are the airway (data.label_selector), or train on more cases."
    )


def hard_sampling_message(missed: int, total: int, next_stage: int = 1) -> tuple[str, str] | None:
    """``("warning" | "info", message)`` about stage 0's missed centreline voxels, or None when it missed none.

    Missing some is what hard skeleton sampling is for (information); missing
    most means stage 0 learned too little to point at the hard branches (warning).
    """
    if total <= 0 or missed <= 0:
        return None
    share = missed / total
    if share >= HARD_MISS_WARN_FRACTION:
        return (
            "warning",
            f"The stage-0 model missed {share * 100:.0f} % of the training airways' centreline "
            f"({missed} of {total} voxels), so it learned too little to point stage {next_stage} at the hard "
            "branches: hard skeleton sampling will draw from almost the whole tree. Train stage 0 longer "
            "(stage0.epochs) or check the labels; the run goes on.",
        )
    return (
        "info",
        f"The stage-0 model missed {share * 100:.1f} % of the training airways' centreline ({missed} of {total} "
        f"voxels); stage {next_stage}'s hard skeleton sampling draws patches around those misses.",
    )
