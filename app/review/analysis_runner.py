"""Running a review session's analysis off the GUI thread (Qt-free job functions).

The session (:class:`core.review.Session`) hands out an :class:`~core.review.AnalysisJob`
holding copies of what it needs; :func:`run_review_analysis` runs it in a worker
thread, or in a child process for large volumes (cc3d / scipy.ndimage hold the GIL:
0.2-0.6 s stalls of the window each on a 512 x 512 x 600 case), with the masks in
shared memory. The result goes back to the session on the GUI thread
(``session.apply_analysis``), with the branch map the slice views colour by.

What crosses the process boundary is unpickled in this process by one C call each, and
a C call holds the GIL from start to end: the GUI thread waits for all of it. On the
ATM'22 pair a whole result (43 MB: the 42 MB reference tree, 3,514 regions) held it
for 25-80 ms, more on a loaded machine. So the result comes back in small pieces: a
reused tree does not come back at all, the regions come in pickled slices unpickled one
by one (the GIL changes hands between them), and the tree goes to the child as the
bytes it came in, kept once (pickling bytes is a copy, not a walk over the tree).
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import threading
import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.progress import Progress
from core.review import AnalysisJob, AnalysisResult

# Volumes at least this large are analysed in a child process (see app.workers.call_in_process).
PROCESS_ANALYSIS_MIN_VOXELS = 32_000_000
# Regions per pickled slice of a child's result: about 1.5 ms of unpickling each (ATM'22 pair).
REGION_SLICE = 250


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


@dataclass
class _Packed:
    """A child's analysis result in pieces: the result without its tree and regions, the new tree's
    pickle (None: the job's tree was reused) and each prediction's regions as pickled slices."""

    result: AnalysisResult
    tree: bytes | None
    regions: dict[str, list[bytes]]


def _pack(result: AnalysisResult, tree_reused: bool) -> _Packed:
    slices = {
        name: [
            pickle.dumps(a.regions[i : i + REGION_SLICE], protocol=5) for i in range(0, len(a.regions), REGION_SLICE)
        ]
        for name, a in result.predictions.items()
    }
    light = dataclasses.replace(
        result,
        tree=None,
        predictions={name: dataclasses.replace(a, regions=[]) for name, a in result.predictions.items()},
    )
    return _Packed(light, None if tree_reused else pickle.dumps(result.tree, protocol=5), slices)


def _unpack(packed: _Packed, job_tree: Any) -> AnalysisResult:
    """The whole result again, a slice at a time (see the module's docstring)."""
    result = packed.result
    if packed.tree is None:
        result.tree = job_tree
    else:
        result.tree = pickle.loads(packed.tree)
        _remember_tree_bytes(result.tree, packed.tree)
    for name, pieces in packed.regions.items():
        regions: list[Any] = []
        for piece in pieces:
            regions.extend(pickle.loads(piece))
        result.predictions[name].regions = regions
    return result


# The last tree that came from the child, with the bytes it came as: a re-analysis sends them back
# as they are. One entry: a session re-analyses against one reference tree at a time.
_tree_bytes_lock = threading.Lock()
_tree_bytes: tuple[weakref.ref[Any], bytes] | None = None


def _remember_tree_bytes(tree: Any, data: bytes) -> None:
    global _tree_bytes
    with _tree_bytes_lock:
        _tree_bytes = (weakref.ref(tree), data)


def _bytes_of_tree(tree: Any) -> bytes:
    with _tree_bytes_lock:
        held = _tree_bytes
    if held is not None and held[0]() is tree:
        return held[1]
    data = pickle.dumps(tree, protocol=5)
    _remember_tree_bytes(tree, data)
    return data


def _job_in_child(
    job: AnalysisJob, tree: bytes | None, ref_spec: tuple[Any, ...], pred_specs: list[tuple[Any, ...]]
) -> _Packed:
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
        job.tree = None if tree is None else pickle.loads(tree)
        return _pack(job.run(), tree_reused=tree is not None)
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
                empty, job.ref_revision, job.geometry, None, [(n, empty, r) for n, _, r in job.predictions]
            )
            tree = None if job.tree is None else _bytes_of_tree(job.tree)
            packed = call_in_process(_job_in_child, light, tree, ref.spec, [p.spec for p in preds], cancel=cancel)
            result = _unpack(packed, job.tree)
    else:
        result = job.detach().run(progress, cancel)
    return result, (tree_result(result.tree) if job.tree is None else None)
