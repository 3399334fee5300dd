"""Compare models over a folder of cases: batch evaluation with a content cache,
statistics (mean/sd, paired Wilcoxon tests, DSC per diameter, BD per generation),
a self-contained HTML report, and the agreement of two predictions without a reference.

Qt-free. Entry points: :func:`compare_folders`, :func:`predict_folders`,
:func:`write_outputs`, :func:`read_outputs`, :func:`agreement`.
"""

from core.compare.agreement import Agreement, agreement
from core.compare.batch import CaseRow, CompareResult, CompareSettings, Failure, compare_folders, reference_tree
from core.compare.cases import case_key, list_cases, match_cases
from core.compare.inference import predict_folders
from core.compare.output import read_outputs, write_outputs

__all__ = [
    "Agreement",
    "CaseRow",
    "CompareResult",
    "CompareSettings",
    "Failure",
    "agreement",
    "case_key",
    "compare_folders",
    "list_cases",
    "match_cases",
    "predict_folders",
    "read_outputs",
    "reference_tree",
    "write_outputs",
]
