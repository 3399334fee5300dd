"""Names of the airway's branches: trachea, main, lobar and segmental bronchi (issue 26)."""

from core.anatomy.labeller import DEFAULT_LOBE_VALUES, label_tree
from core.anatomy.names import (
    ALL_NAMES,
    CENTRAL,
    LOBAR,
    LOBES,
    MERGED,
    SEGMENT_NAMES,
    SEGMENTAL,
    SUBLOBAR,
    is_segmental,
    lobe_of_name,
)
from core.anatomy.tree_names import BranchName, TreeNames

__all__ = [
    "ALL_NAMES",
    "CENTRAL",
    "DEFAULT_LOBE_VALUES",
    "LOBAR",
    "LOBES",
    "MERGED",
    "SEGMENTAL",
    "SEGMENT_NAMES",
    "SUBLOBAR",
    "BranchName",
    "TreeNames",
    "is_segmental",
    "label_tree",
    "lobe_of_name",
]
