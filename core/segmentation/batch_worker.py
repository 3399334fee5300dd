"""The batch runner's inference worker: one child process that loads the model once and segments case after case.

Inference runs in a child so that a crash there (an out-of-memory kill, a segfault in an engine, a SIGKILL
from outside) costs one case, not the run: the parent waits on the child's pipe *and* its process sentinel,
so a dead child is seen at once (never a hang, nnU-Net's users' complaint), the case in flight fails with
"worker killed (signal 9)", and the next case starts a fresh worker.

Protocol over one duplex :func:`multiprocessing.Pipe` (spawn context: the parent runs loader and exporter
threads, and forking a threaded process can copy a held lock):

- child -> parent at start: ``("ready", info)`` (device, engine, description) or ``("error", error)``;
- parent -> child: ``("case", name, dtype, shape)`` then the CT's bytes; ``("stop",)`` ends the child;
- child -> parent per case: any number of ``("progress", done, total, message)``, then
  ``("done", info, [(dtype, shape), ...])`` followed by that many arrays' bytes, or ``("failed", error)``.

Arrays travel as raw bytes (``send_bytes``), not pickles: no second copy of a 200 MB CT.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from core.errors import AirwayError, Cancelled
from core.progress import Cancellable, Progress, throttled

#: seconds between the child's progress messages (the parent only shows them on the bar)
PROGRESS_INTERVAL_S = 0.25
#: how often the parent looks at ``cancel`` while it waits for the child
POLL_S = 0.2


class WorkerDied(Exception):
    """The worker process ended while a case was in flight (the reason says how: a signal or a status)."""


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        # SIGKILL is what the kernel's out-of-memory killer sends (Windows has no such signal: 9 is its number)
        hint = " (out of memory, or killed from outside)" if sig == getattr(signal, "SIGKILL", 9) else ""
        return f"worker killed (signal {sig}){hint}"
    return f"worker exited with status {exitcode} while segmenting"


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AirwayError):
        return {"kind": type(exc).__name__, "what": exc.what, "fix": exc.fix, "path": exc.path, "message": str(exc)}
    if isinstance(exc, MemoryError):
        return {"kind": "MemoryError", "message": "out of memory while segmenting"}
    return {"kind": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"}


def error_from_dict(error: dict[str, Any]) -> AirwayError:
    """The child's error as an error of the project's family (its own class when it is one of ours)."""
    import core.errors

    cls = getattr(core.errors, str(error.get("kind")), None)
    if isinstance(cls, type) and issubclass(cls, AirwayError) and error.get("what") is not None:
        try:
            return cls(error["what"], error.get("fix"), path=error.get("path"))
        except TypeError:  # a subclass with its own constructor
            pass
    return core.errors.InputError(str(error.get("message") or error.get("kind") or "segmentation failed"))


# -- the child ----------------------------------------------------------------------------------------


class _Engine:
    """What the child holds for the whole run: the predictor (loaded once), or region growing."""

    def __init__(self, setup: dict[str, Any]):
        self.method = str(setup["method"])
        self.gate = bool(setup.get("gate", True))
        self.strict = bool(setup.get("strict", False))
        self.probabilities = bool(setup.get("probabilities", False))
        self.predictor: Any = None
        if self.method == "model":
            from core.segmentation import PredictOptions, Predictor

            self.predictor = Predictor(setup["checkpoint"], PredictOptions.from_json(setup.get("options") or {}))

    def info(self) -> dict[str, Any]:
        if self.predictor is None:
            return {"device": "cpu", "backend": "region-growing", "describe": "training-free region growing"}
        p = self.predictor
        return {
            "device": p.device,
            "backend": p.backend_name,
            "describe": p.describe(),
            "export_seconds": p.export_seconds,
        }

    def run(self, ct: Any, progress: Progress) -> tuple[dict[str, Any], list[np.ndarray]]:
        if self.predictor is None:
            from core.growing import grow_airway

            grown = grow_airway(ct, progress=progress)
            info = {
                "method": "region-growing",
                "threshold_hu": grown.threshold_hu,
                "trachea_mm": round(grown.trachea.length_mm, 1),
                "seconds": round(grown.seconds, 2),
                "volume_ml": round(grown.volume_ml, 3),
                "device": "cpu",
                "backend": "region-growing",
                "warnings": [],
            }
            return info, [np.ascontiguousarray(grown.mask.array, dtype=bool)]
        from core.segmentation.route import segment_and_gate

        done = segment_and_gate(self.predictor, ct, gate=self.gate, strict=self.strict, progress=progress)
        pred = done.prediction
        info = {
            "method": "model",
            "windows": pred.windows,
            "windows_total": pred.windows_total,
            "backend": pred.backend,
            "device": self.predictor.device,
            "seconds": round(pred.seconds, 2),
            "warnings": list(done.warnings),
            "gate": done.gate_dict(),
        }
        arrays = [np.ascontiguousarray(pred.mask.array, dtype=bool)]
        if self.probabilities:
            arrays.append(np.ascontiguousarray(pred.probabilities.array, dtype=np.uint8))
        return info, arrays


def worker_main(conn: Connection, setup: dict[str, Any]) -> None:
    """The child's loop (the target of the spawned process)."""
    from core.child_process import die_with_parent
    from core.volume import Geometry, IntensityVolume

    # the parent answers Ctrl+C for the run and ends this process; a second traceback here would only confuse
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    try:
        engine = _Engine(setup)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run with it
        conn.send(("error", error_dict(exc)))
        return
    conn.send(("ready", engine.info()))

    def report(done: float, total: float, message: str = "") -> None:
        conn.send(("progress", float(done), float(total), message))

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "case":
            return
        _, name, dtype, shape, geometry = msg
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        progress = throttled(report, PROGRESS_INTERVAL_S)
        try:
            array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
            ct = IntensityVolume(array, Geometry.from_dict(geometry), name=name)
            info, arrays = engine.run(ct, progress)
        except BaseException as exc:  # noqa: BLE001 - one case's failure, the worker goes on
            conn.send(("failed", error_dict(exc)))
            continue
        del data, ct, array
        conn.send(("done", info, [(a.dtype.str, a.shape) for a in arrays]))
        for a in arrays:
            conn.send_bytes(a.data.cast("B"))


# -- the parent's handle ------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    info: dict[str, Any]
    arrays: list[np.ndarray]


class CaseFailed(Exception):
    """The worker reported an error for this case (it lives on)."""

    def __init__(self, error: AirwayError):
        super().__init__(str(error))
        self.error = error


class Worker:
    """The parent's side: starts the child, sends cases, notices its death, starts a new one when asked.

    ``on_start(pid)``: called with each new child's pid (the runner's status file names it).
    """

    def __init__(self, setup: dict[str, Any], on_start: Callable[[int], None] | None = None):
        self.setup = setup
        self.on_start = on_start
        self.proc: Any = None
        self.conn: Connection | None = None
        self.info: dict[str, Any] = {}
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else int(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self, cancel: Cancellable | None = None) -> dict[str, Any]:
        """Start a child and wait until its model is loaded; a load failure is the run's error (raised)."""
        self.close()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=worker_main, args=(child, self.setup), name="airway-batch-worker", daemon=True)
        proc.start()
        child.close()
        self.proc, self.conn = proc, parent
        self.starts += 1
        if self.on_start is not None and proc.pid is not None:
            self.on_start(proc.pid)
        try:
            msg = self._next(cancel)
        except WorkerDied as exc:
            raise AirwayError(
                f"The segmentation worker ended while loading the model: {exc}.",
                "Check the memory available, or run with --debug for details.",
            ) from None
        if msg[0] == "error":
            self.close()
            raise error_from_dict(msg[1])
        self.info = dict(msg[1])
        return self.info

    def ensure(self, cancel: Cancellable | None = None) -> None:
        if not self.alive():
            self.start(cancel)

    def segment(self, name: str, ct: Any, progress: Progress | None, cancel: Cancellable | None) -> WorkerResult:
        """Segment one CT in the child. Raises :class:`CaseFailed` (the child's error for this case),
        :class:`WorkerDied` (the child is gone; call :meth:`ensure` before the next case) or Cancelled.

        The caller starts the worker (:meth:`ensure`) before it names the case in flight; a worker
        that dies after that fails this case instead of being replaced unseen."""
        if self.proc is None or self.conn is None:
            self.ensure(cancel)
        elif not self.proc.is_alive():
            raise WorkerDied(self._death())
        conn = self.conn
        assert conn is not None
        array = np.ascontiguousarray(ct.array)
        try:
            conn.send(("case", name, array.dtype.str, array.shape, ct.geometry.to_dict()))
            conn.send_bytes(array.data.cast("B"))
        except OSError:
            raise WorkerDied(self._death()) from None
        while True:
            msg = self._next(cancel)
            kind = msg[0]
            if kind == "progress":
                if progress is not None:
                    progress(msg[1], msg[2], msg[3])
                continue
            if kind == "failed":
                raise CaseFailed(error_from_dict(msg[1]))
            if kind == "done":
                arrays = []
                for dtype, shape in msg[2]:
                    try:
                        data = conn.recv_bytes()
                    except (EOFError, OSError):
                        raise WorkerDied(self._death()) from None
                    arrays.append(np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape))
                return WorkerResult(dict(msg[1]), arrays)
            raise WorkerDied(f"unexpected message from the worker: {kind}")

    def _next(self, cancel: Cancellable | None) -> tuple[Any, ...]:
        """The child's next message; WorkerDied when it ends first, Cancelled (child ended) on ``cancel``."""
        conn, proc = self.conn, self.proc
        assert conn is not None and proc is not None
        while True:
            if cancel is not None and cancel.is_set():
                self.close(kill=True)
                raise Cancelled("Batch segmentation cancelled.")
            ready = wait([conn, proc.sentinel], timeout=POLL_S)
            if conn in ready:
                try:
                    return tuple(conn.recv())
                except (EOFError, OSError):
                    raise WorkerDied(self._death()) from None
            if proc.sentinel in ready:
                raise WorkerDied(self._death())

    def _death(self) -> str:
        proc = self.proc
        if proc is None:
            return "no worker"
        proc.join(timeout=5)
        reason = death_reason(proc.exitcode)
        self._drop()
        return reason

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.proc = None

    def close(self, kill: bool = False) -> None:
        """End the child (asked to stop between cases, or ``kill``ed: a case in flight is abandoned);
        safe to call twice."""
        proc, conn = self.proc, self.conn
        if proc is None:
            return
        if not kill:
            try:
                if conn is not None and proc.is_alive():
                    conn.send(("stop",))
            except OSError:
                pass
            proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        self._drop()
