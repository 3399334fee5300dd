"""Every child of the app ends when the app ends, however it ends (issue 22).

A crash or an out-of-memory kill is SIGKILL: no atexit handler, no closeEvent,
no "cancel" line. The tests kill the real app that way and find none of its
children (the analysis process, its multiprocessing resource tracker, the
segmentation process) alive 5 s later, and the app's output pipe closed (an
orphan holding it would keep a caller waiting for ever). Before
core.child_process the analysis process ran on as an orphan.

Not covered, by design: the trainer (app.training.launch.launch_detached) is
started in its own session so that a long training survives the window being
closed or the app restarting (docs/architecture.md); the tab reattaches to it
by its pid record. These tests never start one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 5.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX (the watcher thread covers Windows)")


class Output:
    """A child's stdout read on a thread: its lines, and whether every writer closed it."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.eof = threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())
        self.eof.set()

    def tail(self) -> str:
        return "\n".join(self.lines[-30:])


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str, output: Output | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout_s:.0f} s" + (f"; output:\n{output.tail()}" if output else ""))
        time.sleep(0.1)


def _while_running(app: subprocess.Popen, condition: Callable[[], bool], out: Output) -> Callable[[], bool]:
    """``condition``, failing at once if the app ended on its own (a crash at start-up)."""

    def check() -> bool:
        if app.poll() is not None:
            pytest.fail(f"the app ended by itself (exit status {app.returncode}); output:\n{out.tail()}")
        return condition()

    return check


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _children(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if _alive(p)]
    except psutil.Error:
        return []


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AIRWAY_STUDIO_PARENT_PID", None)
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        AIRWAY_STUDIO_RECOVERY_DIR=str(tmp_path / "recovery"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),  # the user's settings and recent files stay untouched
        MPLCONFIGDIR=str(tmp_path / "mpl"),
    )
    return env


def _kill_and_expect_no_orphans(app: subprocess.Popen, out: Output, children: list[psutil.Process]) -> None:
    try:
        assert all(_alive(c) for c in children), "a child ended before the app was killed: nothing was tested"
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=30)
        deadline = time.monotonic() + DEADLINE_S
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [f"{c.pid} {_cmdline(c)[:120]}" for c in children if _alive(c)]
        assert not left, f"children alive {DEADLINE_S:.0f} s after the app was killed: {left}"
        # nobody holds the app's output pipe any more
        assert out.eof.wait(timeout=DEADLINE_S), "the app's stdout is still held open"
    finally:
        for c in children:  # a failed run leaves nothing behind on a shared machine
            if _alive(c):
                c.kill()
        if app.poll() is None:
            app.kill()
            app.wait()


def _write_label(path: Path, array_zyx: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), np.diag([0.7, 0.7, 2.5, 1.0])), path)


@pytest.mark.slow
def test_python_m_app_killed_leaves_no_analysis_process(tmp_path):
    """``python -m app --reference R --prediction P`` on a pair large enough to be analysed in
    the child process (as the ATM'22 pair is), SIGKILLed while the child exists."""
    from app.review.analysis_runner import PROCESS_ANALYSIS_MIN_VOXELS

    shape = (128, 512, 512)
    assert np.prod(shape) >= PROCESS_ANALYSIS_MIN_VOXELS  # else the analysis runs on a thread: nothing to test
    ref = np.zeros(shape, np.uint8)
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    ref[10:118][:, (yy - 256) ** 2 + (xx - 256) ** 2 <= 64] = 1
    pred = ref.copy()
    pred[60:70] = 0
    _write_label(tmp_path / "ref.nii", ref)
    _write_label(tmp_path / "pred.nii", pred)
    del ref, pred

    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "--reference",
            str(tmp_path / "ref.nii"),
            "--prediction",
            str(tmp_path / "pred.nii"),
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = Output(app.stdout)
    try:
        analysing = _while_running(app, lambda: any("spawn_main" in _cmdline(c) for c in _children(app.pid)), out)
        _wait_until(analysing, 120, "the analysis process", out)
    except BaseException:
        app.kill()
        raise
    _kill_and_expect_no_orphans(app, out, _children(app.pid))


def _maps_torch(proc: psutil.Process) -> bool:
    try:
        return any("libtorch" in m.path for m in proc.memory_maps())
    except psutil.Error:
        return False


@pytest.mark.slow
def test_app_killed_while_segmenting_leaves_no_segmentation_or_analysis_process(tmp_path):
    """The app with a CT and its reference; Tools > Segment with the shipped model; SIGKILL
    once the segmentation process has loaded torch (it is segmenting) and the analysis
    process exists."""
    pytest.importorskip("torch")
    from core.io import write_volume
    from core.phantom import make_phantom
    from core.resources import shipped_model_path

    if shipped_model_path() is None:
        pytest.skip("the shipped model (resources/models) is not installed")
    ph = make_phantom(shape=128, seed=1, generations=3)
    write_volume(ph.ct, tmp_path / "ct.nii", compress=False)
    write_volume(ph.label, tmp_path / "ref.nii", compress=False)

    app = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "app_with_children.py"),
            str(tmp_path / "ct.nii"),
            "--reference",
            str(tmp_path / "ref.nii"),
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = Output(app.stdout)

    def both_children() -> bool:
        kids = _children(app.pid)
        segmenting = [c for c in kids if "core.predict_process" in _cmdline(c)]
        return any("spawn_main" in _cmdline(c) for c in kids) and any(_maps_torch(c) for c in segmenting)

    try:
        _wait_until(_while_running(app, both_children, out), 120, "the analysis and segmentation processes", out)
    except BaseException:
        app.kill()
        raise
    _kill_and_expect_no_orphans(app, out, _children(app.pid))


# -- die_with_parent on its own: the race and the portable fallback ---------------------------

_GRANDCHILD = textwrap.dedent(
    """
    import os, sys, time
    import core.child_process as cp
    mode = sys.argv[1]
    if mode == "late":  # the parent died before this child could ask to die with it
        while os.getppid() == int(os.environ[cp.PARENT_PID_ENV]):
            time.sleep(0.01)
    if mode == "fallback":  # what Windows and macOS rely on: the watcher thread alone
        cp._set_pdeathsig = lambda: None
    cp.die_with_parent(poll_s=0.05)
    print("watching", flush=True)
    time.sleep(120)
    print("survived", flush=True)
    """
)

_PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    env = dict(os.environ, AIRWAY_STUDIO_PARENT_PID=str(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env)
    print("child", child.pid, flush=True)
    if sys.argv[2] != "late":
        time.sleep(120)
    """
)


def _parent_and_grandchild(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Output, psutil.Process]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _GRANDCHILD, mode],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = Output(parent.stdout)
    _wait_until(lambda: any(line.startswith("child ") for line in out.lines), 30, "the grandchild's start", out)
    pid = int(next(line for line in out.lines if line.startswith("child ")).split()[1])
    try:
        return parent, out, psutil.Process(pid)
    except psutil.NoSuchProcess:
        return parent, out, psutil.Process(os.getpid())  # never alive-checked: it already ended


@pytest.mark.parametrize("mode", ["prctl", "fallback"])
def test_a_child_ends_when_its_parent_is_killed(tmp_path, mode):
    parent, out, child = _parent_and_grandchild(tmp_path, mode)
    try:
        _wait_until(lambda: "watching" in out.lines, 30, "the child's watch", out)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        assert out.eof.wait(timeout=DEADLINE_S), f"the child ({mode}) outlived its parent: {out.tail()}"
        # its pipe closes while it exits: the process itself is gone a moment later
        _wait_until(lambda: not _alive(child), DEADLINE_S, f"the child's ({mode}) exit", out)
        assert "survived" not in out.lines
    finally:
        if child.pid != os.getpid() and _alive(child):
            child.kill()
        if parent.poll() is None:
            parent.kill()


def test_a_child_whose_parent_died_before_it_started_watching_ends_at_once(tmp_path):
    parent, out, child = _parent_and_grandchild(tmp_path, "late")
    try:
        parent.wait(timeout=30)
        # not 5 s: the child may still be starting Python on a loaded machine; it would run 120 s
        assert out.eof.wait(timeout=60), f"the orphaned child runs on: {out.tail()}"
        assert "watching" not in out.lines and "survived" not in out.lines
    finally:
        if child.pid != os.getpid() and _alive(child):
            child.kill()


def test_the_analysis_process_outlives_the_job_thread_that_started_it():
    """Linux sends the parent-death signal when the *thread* that started a child ends;
    jobs run on pool threads that come and go, the analysis process must not go with them."""
    from app.workers import call_in_process, shutdown_process_pool

    shutdown_process_pool()
    pids: list[int] = []
    native: list[int] = []

    def job() -> None:
        native.append(threading.get_native_id())
        pids.append(call_in_process(os.getpid))

    try:
        worker = threading.Thread(target=job)
        worker.start()
        worker.join(timeout=120)
        assert pids, "the analysis process did not answer"
        # the OS thread is gone, not only its Python object
        _wait_until(lambda: native[0] not in {t.id for t in psutil.Process().threads()}, 30, "the thread's exit")
        assert _alive(psutil.Process(pids[0]))
        assert call_in_process(os.getpid) == pids[0]
    finally:
        shutdown_process_pool()
