"""Work on a dataset, not one case: its cases (:mod:`.layout`), the review state beside the data
(:mod:`.state`), the frozen split (:mod:`.split`), reviewed label versions (:mod:`.labels`) and a
summary (:mod:`.summary`). docs/dataset.md describes the layouts and files."""

from __future__ import annotations

from core.dataset.figures import FigureRecord, evaluate_dataset
from core.dataset.labels import edit_log_path, read_edit_log, write_reviewed_label
from core.dataset.layout import (
    LAYOUTS,
    REVIEWED_DIR,
    SPLIT_PARTS,
    STATE_FILE,
    Dataset,
    DatasetCase,
    natural_key,
    open_dataset,
)
from core.dataset.split import DEFAULT_FRACTIONS, SplitReport, freeze_split, freeze_split_report
from core.dataset.state import (
    FIGURES,
    STATUSES,
    CaseState,
    DamagedStateError,
    DatasetState,
    StateLock,
    add_time,
    read_state,
    set_case,
    set_figures,
    update_state,
)
from core.dataset.summary import progress_text, status_counts, summary_rows

__all__ = [
    "DEFAULT_FRACTIONS",
    "FIGURES",
    "LAYOUTS",
    "REVIEWED_DIR",
    "SPLIT_PARTS",
    "STATE_FILE",
    "STATUSES",
    "CaseState",
    "DamagedStateError",
    "Dataset",
    "DatasetCase",
    "DatasetState",
    "FigureRecord",
    "SplitReport",
    "StateLock",
    "add_time",
    "edit_log_path",
    "evaluate_dataset",
    "freeze_split",
    "freeze_split_report",
    "natural_key",
    "open_dataset",
    "progress_text",
    "read_edit_log",
    "read_state",
    "set_case",
    "set_figures",
    "status_counts",
    "summary_rows",
    "update_state",
    "write_reviewed_label",
]
