"""Headless review of a case: label layers with undo, error regions with their
own voxels and stable keys, analysis, safe saves and crash recovery.

    from core.review import Session
    s = Session.load(ct=None, reference="ref.nii.gz", predictions=["pred.nii.gz"])
    s.analyse()
    s.accept(s.regions(0)[0].key)
    s.save_reference("new.nii.gz")
"""

from core.review.layers import Change, Delta, Edit, History, LabelLayer
from core.review.persist import backup_path, default_recovery_dir, edit_log_path, list_recoveries
from core.review.session import (
    METRIC_KEYS,
    STATUS_KEYS,
    STATUSES,
    AnalysisJob,
    AnalysisResult,
    PendingSave,
    ReviewRegion,
    Session,
    check_recovery,
    recovery_inputs,
)

__all__ = [
    "AnalysisJob",
    "AnalysisResult",
    "Change",
    "Delta",
    "Edit",
    "History",
    "LabelLayer",
    "METRIC_KEYS",
    "PendingSave",
    "ReviewRegion",
    "STATUSES",
    "STATUS_KEYS",
    "Session",
    "backup_path",
    "default_recovery_dir",
    "check_recovery",
    "edit_log_path",
    "list_recoveries",
    "recovery_inputs",
]
