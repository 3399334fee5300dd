"""Running a review session's analysis off the GUI thread (Qt-free job functions).

The session (:class:`core.review.Session`) hands out an :class:`~core.review.AnalysisJob`
holding copies of what it needs; :func:`run_review_analysis` runs it in a worker
thread, or in a child process for large volumes (cc3d / scipy.ndimage hold the GIL:
0.2-0.6 s stalls of the window each on a 512 x 512 x 600 case), with the masks in
shared memory. The result goes back to the session on the GUI thread
(``session.apply_analysis``), with the branch map the slice views colour by.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.progress import Progress
from core.review import AnalysisJob, AnalysisResult

# Volumes at least this large are analysed in a child process (see app.workers.call_in_process).
PROCESS_ANALYSIS_MIN_VOXELS = 32_000_000


def _noop(*_a: Any, **_k: Any) -> None:
    return None


@dataclass
class TreeResult:
    """What the views need of a new reference tree, computed beside the analysis."""

    tree: Any  # core.tree.AirwayTree
    branch_map: np.ndarray | None  # int32 branch id per voxel (0 outside), canonical grid
    generations: dict[int, int]  # branch id -> generation


def tree_result(tree: Any) -> TreeResult:
    return TreeResult(tree, np.asarray(tree.branch_label_map()), {int(b.id): int(b.generation) for b in tree.branches})


def use_process(voxels: int, in_process: bool | None) -> bool:
    """Analyse in a child process? ``in_process`` decides when given; else large volumes do."""
    if in_process is not None:
        return bool(in_process)
    # a frozen build would need multiprocessing.freeze_support() in its entry point
    # before a spawned child could run anything but the GUI again: threads there
    return not getattr(sys, "frozen", False) and voxels >= PROCESS_ANALYSIS_MIN_VOXELS


def _job_in_child(job: AnalysisJob, ref_spec: tuple[Any, ...], pred_specs: list[tuple[Any, ...]]) -> AnalysisResult:
    from app.workers import attach_shared

    held = []
    try:
        shm, job.reference = attach_shared(ref_spec)
        held.append(shm)
        preds = []
        for (name, _, rev), spec in zip(job.predictions, pred_specs):
            shm, arr = attach_shared(spec)
            held.append(shm)
            preds.append((name, arr, rev))
        job.predictions = preds
        return job.run()
    finally:
        job.reference, job.predictions = np.zeros(0, bool), []
        for shm in held:
            shm.close()


def run_review_analysis(
    job: AnalysisJob, *, in_process: bool | None = None, progress: Progress = _noop, cancel: Any = None
) -> tuple[AnalysisResult, TreeResult | None]:
    """A session's analysis job, in a child process for large volumes; with the branch map when the
    tree is new. A job on the live arrays (``Session.analysis_job(copy=False)``) is copied here, in the
    worker (into shared memory for a child): edits may go on meanwhile (see ``AnalysisJob.detach``)."""
    from app.workers import SharedArray, call_in_process

    if use_process(int(job.reference.size), in_process) and (job.predictions or job.tree is None):
        with ExitStack() as stack:
            ref = stack.enter_context(SharedArray(job.reference))
            preds = [stack.enter_context(SharedArray(a)) for _, a, _ in job.predictions]
            # the arrays travel in shared memory: the pickled job carries none
            empty = np.zeros(0, bool)
            light = AnalysisJob(
                empty, job.ref_revision, job.geometry, job.tree, [(n, empty, r) for n, _, r in job.predictions]
            )
            result = call_in_process(_job_in_child, light, ref.spec, [p.spec for p in preds], cancel=cancel)
    else:
        result = job.detach().run(progress, cancel)
    return result, (tree_result(result.tree) if job.tree is None else None)
