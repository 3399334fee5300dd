"""A hand-built airway the anatomy labeller names: trachea, two main bronchi, two lobar stems a side and
two branches under each (15 branches), in the review session's canonical LPS frame (axis 0 runs
inferior -> superior, axis 2 right -> left). Shared by the tests of the names layer and of the app."""

from __future__ import annotations

import numpy as np
from airway_shapes import tube

SHAPE = (76, 80, 96)
SPACING_XYZ = (0.8, 0.7, 0.7)


def segments() -> list[tuple[tuple[int, int, int], tuple[int, int, int], float]]:
    out = [((72, 40, 48), (54, 40, 48), 4.0), ((54, 40, 48), (42, 40, 30), 3.0), ((54, 40, 48), (42, 40, 66), 3.0)]
    for main, side in (((42, 40, 30), -1), ((42, 40, 66), 1)):
        for dy in (-12, 12):
            end = (28, 40 + dy, main[2] + side * 9)
            out.append((main, end, 2.5))
            for dy2 in (-6, 6):
                out.append((end, (15, end[1] + dy2, end[2] + side * 5), 2.0))
    return out


def reference() -> np.ndarray:
    return tube(SHAPE, segments())


def stub() -> np.ndarray:
    """A short side branch off the trachea: parsed, it renumbers the tree's branches."""
    return tube(SHAPE, [((64, 40, 48), (64, 40, 62), 2.0)])
