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
for 25-80 ms, more on a loaded machine. So the result comes back in small pieces, in
shared memory (:mod:`app.shared_pickles`: arrays copied without the GIL, the rest
unpickled an object at a time): a reused tree does not come back at all, the regions
come in slices of ``REGION_SLICE``, and a new tree's block is kept and named in the
next job, so the tree is never pickled again on the way to the child.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import threading
import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.shared_pickles import SharedPickles, read_pickles, share_pickles, unlink_pickles
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
    """A child's analysis result in pieces: the result without its tree and regions, the new tree
    in a shared block (None: the job's tree was reused) and the regions in slices in another,
    ``slices`` of them per prediction, in order."""

    result: AnalysisResult
    tree: SharedPickles | None
    regions: SharedPickles
    slices: dict[str, int]


def _pack(result: AnalysisResult, tree_reused: bool, shared_memory: bool | None = None) -> _Packed:
    pieces: list[Any] = []
    counts: dict[str, int] = {}
    for name, a in result.predictions.items():
        cut = [a.regions[i : i + REGION_SLICE] for i in range(0, len(a.regions), REGION_SLICE)]
        pieces.extend(cut)
        counts[name] = len(cut)
    light = dataclasses.replace(
        result,
        tree=None,
        predictions={name: dataclasses.replace(a, regions=[]) for name, a in result.predictions.items()},
    )
    regions = share_pickles(pieces, shared_memory=shared_memory)
    try:
        tree = None if tree_reused else share_pickles([result.tree], shared_memory=shared_memory)
    except BaseException:
        unlink_pickles(regions)
        raise
    return _Packed(light, tree, regions, counts)


def _unpack(packed: _Packed, job_tree: Any) -> AnalysisResult:
    """The whole result again, a slice at a time (see the module's docstring); frees the regions'
    block, keeps a new tree's to send back with the next job."""
    result = packed.result
    try:
        pieces = read_pickles(packed.regions, unlink=True)
        result.tree = job_tree if packed.tree is None else read_pickles(packed.tree, unlink=False)[0]
    except BaseException:
        unlink_pickles(packed.tree)
        raise
    if packed.tree is not None:
        _remember_tree_block(result.tree, packed.tree)
    at = 0
    for name, n in packed.slices.items():
        regions: list[Any] = []
        for piece in pieces[at : at + n]:
            regions.extend(piece)
        at += n
        result.predictions[name].regions = regions
    return result


# The last tree that came from the child, with the shared block it came in: a re-analysis hands the
# child that block's name. One entry: a session re-analyses against one reference tree at a time.
_tree_block_lock = threading.Lock()
_tree_block: tuple[weakref.ref[Any], SharedPickles] | None = None


def _remember_tree_block(tree: Any, block: SharedPickles) -> None:
    global _tree_block
    with _tree_block_lock:
        old, _tree_block = _tree_block, (weakref.ref(tree), block)
    if old is not None and old[1] is not block:
        unlink_pickles(old[1])


def _block_of_tree(tree: Any) -> SharedPickles:
    with _tree_block_lock:
        held = _tree_block
    if held is not None and held[0]() is tree and _still_there(held[1]):
        return held[1]
    block = share_pickles([tree])
    _remember_tree_block(tree, block)
    return block


def _still_there(block: SharedPickles) -> bool:
    # a block whose name is gone (freed by hand, /dev/shm cleaned) is made again rather than sent
    return block.name is None or not os.path.isdir("/dev/shm") or os.path.exists(f"/dev/shm/{block.name}")


@atexit.register
def _forget_tree_block() -> None:
    global _tree_block
    with _tree_block_lock:
        held, _tree_block = _tree_block, None
    if held is not None:
        unlink_pickles(held[1])


def _job_in_child(
    job: AnalysisJob, tree: SharedPickles | None, ref_spec: tuple[Any, ...], pred_specs: list[tuple[Any, ...]]
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
        job.tree = None if tree is None else read_pickles(tree, unlink=False)[0]
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
            tree = None if job.tree is None else _block_of_tree(job.tree)
            packed = call_in_process(_job_in_child, light, tree, ref.spec, [p.spec for p in preds], cancel=cancel)
            result = _unpack(packed, job.tree)
    else:
        result = job.detach().run(progress, cancel)
    return result, (tree_result(result.tree) if job.tree is None else None)
