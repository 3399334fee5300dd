"""A GUI-thread watchdog for tests and benchmarks.

A 20 ms heartbeat ``QTimer`` on the GUI thread records every gap between two
ticks; a gap much longer than the interval is a stall (the event loop was
busy). Each gap is tagged with the phase the caller named (``with
dog.phase("open"): ...``), so a test can say "no stall above 250 ms while
opening". A sampler thread takes the GUI thread's Python stack while a stall
is going on, so a benchmark can say *what* blocked (``dog.report()``).

On a machine other programs load, the GUI thread also waits for a CPU: a gap
then holds time in which the kernel ran someone else. Each tick reads how
long the GUI thread has waited on a run queue (Linux ``schedstat``), so a gap
is also told less that wait (``own_ms``): the time the event loop was busy or
blocked by this process (its own work, the GIL held by one of its threads),
which is what the app controls. A GUI thread can also wait for a CPU through
another thread: blocked in a paint on llvmpipe's rasteriser threads, or on the
GIL while its holder sits on a run queue. So for a long gap, the time the GUI
thread was blocked (neither on a CPU nor waiting for one) counts less the
run-queue wait of the thread that waited longest in that gap, but never less
that thread's CPU time: the GUI thread's work and that thread's count whole.
Tests assert on that; reports give both, and for each long gap the process's
busiest threads in it (time on a CPU and in the run queue): a GUI thread
blocked on the GIL or on the renderer shows as a gap with little CPU of its
own beside the thread it waited for. Best effort: the
sampler's snapshot needs the GIL for every thread it reads, so a thread that
spins Python code from the gap's very start can leave the list empty.

Usage::

    dog = Watchdog()
    dog.start()
    with dog.phase("navigate") as ph:
        QTest.keyClick(window, Qt.Key_N)
        qtbot.waitUntil(...)
    assert ph.longest_ms < 250, dog.report()
    dog.stop()
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, QTimer


class _RunqueueClock:
    """How long the thread that made it has waited for a CPU while runnable, in ms (Linux
    ``/proc/thread-self/schedstat``, kept open: a tick costs a microsecond, not an open()).
    0 where the kernel does not say."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def ms(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e6
        except (OSError, ValueError, IndexError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _threads_cpu_and_wait() -> dict[str, tuple[float, float]]:
    """Every thread of this process: "name:tid" -> (ms on a CPU, ms waiting for one), from Linux
    ``schedstat``; empty elsewhere."""
    out: dict[str, tuple[float, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                cpu, wait = f.read().split()[:2]
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            out[f"{name}:{tid}"] = (int(cpu) / 1e6, int(wait) / 1e6)
        except (OSError, ValueError):
            continue
    return out


@dataclass
class Gap:
    phase: str
    start_s: float  # monotonic time of the tick before the gap
    ms: float  # time between the two ticks, less the interval
    waited_ms: float = 0.0  # of it, the GUI thread runnable but waiting for a CPU (other programs' load)
    # for a long gap: the process's busiest threads in it, "name:tid cpu C wait W" (ms), so a
    # report shows whom the GUI thread waited for (a thread holding the GIL, the renderer...)
    threads: str = ""
    # for a long gap (None otherwise): the GUI thread's time on a CPU in it, and the longest time any
    # other thread of this process waited for a CPU in it
    cpu_ms: float | None = None
    # of the other threads of this process, the one that waited longest for a CPU in the gap: (its
    # time on a CPU, its time waiting for one)
    helper_ms: tuple[float, float] = (0.0, 0.0)

    @property
    def blocked_ms(self) -> float:
        """Of the gap, the GUI thread neither on a CPU nor waiting for one: waiting for another thread
        (the GIL's holder, the renderer's threads in a paint); 0 where not known."""
        return 0.0 if self.cpu_ms is None else max(0.0, self.ms - self.waited_ms - self.cpu_ms)

    @property
    def own_ms(self) -> float:
        """The gap less the waits for a CPU that other programs' load makes. The GUI thread's own wait
        comes off; so, while it was blocked, does the wait of the thread it most likely waited for (the
        one that waited longest: llvmpipe's rasteriser in a paint, the GIL's holder), but never that
        thread's own CPU time: the blocked time that thread's work explains counts as the app's, like
        the GUI thread's own work."""
        cpu, waited = self.helper_ms
        return max(0.0, self.ms - self.waited_ms - min(waited, max(0.0, self.blocked_ms - cpu)))


@dataclass
class PhaseResult:
    name: str
    gaps: list[Gap] = field(default_factory=list)
    started_s: float = 0.0
    ended_s: float = 0.0

    @property
    def longest_ms(self) -> float:
        return max((g.ms for g in self.gaps), default=0.0)

    @property
    def longest_own_ms(self) -> float:
        """The longest gap less its wait for a CPU (:attr:`Gap.own_ms`)."""
        return max((g.own_ms for g in self.gaps), default=0.0)

    @property
    def seconds(self) -> float:
        return (self.ended_s or time.monotonic()) - self.started_s


def _thread_deltas(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """Per thread ("name:tid"): (ms on a CPU, ms waiting for one) between two snapshots."""
    out = {}
    for key, (cpu, wait) in after.items():
        c0, w0 = before.get(key, (0.0, 0.0))
        out[key] = (cpu - c0, wait - w0)
    return out


def _busiest_threads(deltas: dict[str, tuple[float, float]]) -> str:
    rows = [(c + w, c, w, key) for key, (c, w) in deltas.items() if c >= 5 or w >= 5]
    rows.sort(reverse=True)  # busy, or wanting to be: a thread the GUI thread waits for shows either way
    return ", ".join(f"{key} cpu {c:.0f} wait {w:.0f}" for _, c, w, key in rows[:6])


class Watchdog(QObject):
    """Heartbeat on the GUI thread, stall sampler beside it.

    ``sample_after_ms``: the sampler records the GUI thread's stack once a
    tick is this late (every ``sample_every_ms`` while the stall lasts);
    0 turns sampling off.
    """

    def __init__(
        self,
        interval_ms: int = 20,
        sample_after_ms: float = 80.0,
        sample_every_ms: float = 25.0,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.sample_after_ms = sample_after_ms
        self.sample_every_ms = sample_every_ms
        self.gaps: list[Gap] = []
        self.phase_name = "idle"
        self.phases: list[PhaseResult] = []
        self._current: list[PhaseResult] = []
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0
        self._last_wait = 0.0
        self._runqueue: _RunqueueClock | None = None
        self._gui_thread = threading.get_ident()
        self._gui_tid = threading.get_native_id()
        # per-thread schedstat, taken by the sampler while the heartbeat is on time: (monotonic, snapshot)
        self._baseline: tuple[float, dict[str, tuple[float, float]]] | None = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        # (phase, stack text) -> samples; a sample is ``sample_every_ms`` of stall
        self.samples: Counter[tuple[str, str]] = Counter()

    # -- heartbeat (GUI thread) ----------------------------------------------------------
    def start(self) -> Watchdog:
        self._gui_thread = threading.get_ident()
        self._gui_tid = threading.get_native_id()
        self._last = time.monotonic()
        if self._runqueue is None:
            self._runqueue = _RunqueueClock()  # opened here, on the GUI thread: it reads that thread
        self._last_wait = self._runqueue.ms()
        self._timer.start()
        if self.sample_after_ms > 0 and self._sampler is None:
            self._stop.clear()
            self._sampler = threading.Thread(target=self._sample_loop, name="watchdog-sampler", daemon=True)
            self._sampler.start()
        return self

    def stop(self) -> None:
        self._timer.stop()
        if self._runqueue is not None:
            self._runqueue.close()
            self._runqueue = None
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=1.0)
            self._sampler = None

    def _tick(self) -> None:
        now, waited = time.monotonic(), (self._runqueue.ms() if self._runqueue is not None else 0.0)
        ms = max(0.0, (now - self._last) * 1000.0 - self.interval_ms)
        gap = Gap(self.phase_name, self._last, ms, min(ms, max(0.0, waited - self._last_wait)))
        base = self._baseline
        if gap.ms >= self.sample_after_ms and base is not None and base[0] <= self._last + 0.05:
            deltas = _thread_deltas(base[1], _threads_cpu_and_wait())
            gap.threads = _busiest_threads(deltas)
            gui = f":{self._gui_tid}"
            mine = [cw for key, cw in deltas.items() if key.endswith(gui)]
            if mine:
                gap.cpu_ms = mine[0][0]
                others = [cw for key, cw in deltas.items() if not key.endswith(gui)]
                gap.helper_ms = max(others, key=lambda cw: cw[1], default=(0.0, 0.0))
        self._last, self._last_wait = now, waited
        self.gaps.append(gap)
        for ph in self._current:
            ph.gaps.append(gap)

    def flush(self) -> None:
        """Count the time since the last tick as a gap (call before reading a phase's result)."""
        self._tick()

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseResult]:
        """Gaps during the block are tagged ``name`` and collected in the yielded result."""
        res = PhaseResult(name, started_s=time.monotonic())
        outer = self.phase_name
        self.phase_name = name
        self._current.append(res)
        try:
            yield res
        finally:
            self.flush()
            self._current.remove(res)
            self.phase_name = outer
            res.ended_s = time.monotonic()
            self.phases.append(res)

    def longest(self, phase: str | None = None) -> float:
        return max((g.ms for g in self.gaps if phase is None or g.phase == phase), default=0.0)

    def longest_own(self, phase: str | None = None) -> float:
        """The longest gap less its wait for a CPU (:attr:`Gap.own_ms`)."""
        return max((g.own_ms for g in self.gaps if phase is None or g.phase == phase), default=0.0)

    # -- stack sampler (its own thread) ------------------------------------------------------
    def _sample_loop(self) -> None:
        every = self.sample_every_ms / 1000.0
        while not self._stop.wait(every):
            late_ms = (time.monotonic() - self._last) * 1000.0 - self.interval_ms
            if late_ms < self.interval_ms:
                self._baseline = (time.monotonic(), _threads_cpu_and_wait())
            if late_ms < self.sample_after_ms:
                continue
            frames = sys._current_frames()
            frame = frames.get(self._gui_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            # the innermost frames (short enough to read)
            lines = [f"{fs.filename.rsplit('/', 2)[-1]}:{fs.lineno} {fs.name}" for fs in stack[-10:]]
            # a GUI thread waiting in the event loop may be waiting for the GIL: who runs Python?
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, other in frames.items():
                if ident in (self._gui_thread, threading.get_ident()):
                    continue
                inner = traceback.extract_stack(other)[-3:]
                if inner and not any(fs.name in ("wait", "_wait_for_tstate_lock", "select", "poll") for fs in inner):
                    where = " < ".join(
                        f"{fs.filename.rsplit('/', 1)[-1]}:{fs.lineno} {fs.name}" for fs in reversed(inner)
                    )
                    lines.append(f"  [thread {names.get(ident, ident)}] {where}")
            self.samples[(self.phase_name, "\n    ".join(lines))] += 1

    def report(self, top: int = 6, min_ms: float = 100.0) -> str:
        """The longest gaps per phase and the stacks sampled most often during stalls."""
        out = []
        by_phase: dict[str, list[Gap]] = {}
        for g in self.gaps:
            by_phase.setdefault(g.phase, []).append(g)
        for name, gaps in by_phase.items():
            long = sorted((g for g in gaps if g.ms >= min_ms), key=lambda g: g.ms, reverse=True)
            worst = max(gaps, key=lambda g: g.ms)
            out.append(
                f"{name}: longest {worst.ms:.0f} ms ({worst.waited_ms:.0f} of them waiting for a CPU); "
                f"{len(long)} gaps >= {min_ms:.0f} ms: "
                + ", ".join(f"{g.ms:.0f} (own {g.own_ms:.0f})" for g in long[:10])
            )
        long_gaps = sorted((g for g in self.gaps if g.threads and g.ms >= min_ms), key=lambda g: g.ms, reverse=True)
        for g in long_gaps[:top]:
            out.append(f"[{g.phase}] {g.ms:.0f} ms gap (own {g.own_ms:.0f}), busiest threads in it: {g.threads}")
        for (name, stack), n in self.samples.most_common(top):
            out.append(f"[{name}] ~{n * self.sample_every_ms:.0f} ms in\n    {stack}")
        return "\n".join(out)
