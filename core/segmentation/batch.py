"""Batch segmentation of a folder of CTs that scales out: ``airway segment --input-dir IN --output-dir OUT``.

- The model is loaded once per run, in a worker process (:mod:`core.segmentation.batch_worker`) where a
  crash costs one case: a killed worker fails the case in flight ("worker killed (signal 9)") and a fresh
  worker takes the next one.
- Reading, inference and writing overlap: ``loaders`` threads read and check the next cases (SimpleITK
  releases the GIL while it decodes), ``exporters`` threads write masks (gzip is the slow part), the
  inference loop feeds the worker. Queues are bounded: at most ``loaders + 1`` cases are read ahead, at most
  ``exporters`` results wait to be written. ``loaders = exporters = 0`` runs each case start to finish in turn.
- ``num_parts`` / ``part_id`` split the sorted cases round-robin (case ``i`` of the sorted list belongs to part
  ``i % num_parts``, as nnU-Net splits them), so K processes, GPUs or SLURM array tasks cover a cohort with
  only the output folder shared; each part writes only its own cases, every file atomically.
- ``resume`` (``--continue``) skips a case whose mask and record exist and whose record names this input
  (its bytes, else its voxels and grid), this model's checksum and these mask options; see
  :mod:`core.segmentation.batch_record`. Every written case gets ``OUT/CASE.json`` beside ``OUT/CASE.nii.gz``.
- A failing case (unreadable, refused by the checks, gate failure under ``strict``, an exception, a killed
  worker) is recorded with its reason and the others go on; the caller decides the exit status.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import AirwayError, Cancelled, ConfigError, InputError
from core.progress import Cancellable, Progress
from core.segmentation.batch_cases import Case, evaluate_mask, find_cases, read_case_inputs
from core.segmentation.batch_record import (
    ModelInfo,
    build_record,
    input_file_key,
    input_keys,
    model_info,
    read_record,
    record_path,
    why_redone,
)
from core.segmentation.options import PredictOptions
from core.volume import Geometry, IntensityVolume, LabelVolume

STATUSES = ("done", "skipped", "failed")
#: options of PredictOptions that change how fast a mask is made, not the mask (--continue ignores them)
EXECUTION_OPTIONS = ("device", "backend", "batch_size", "threads", "cache", "device_accumulate", "channels_last")


@dataclass
class BatchOptions:
    """How a batch run is organised (not what a mask looks like: that is :class:`SegmentOptions`)."""

    workers_load: int = 1
    workers_export: int = 1
    num_parts: int = 1
    part_id: int = 0
    resume: bool = False
    #: replace existing outputs of the cases this run segments (the first original kept as NAME.bak)
    overwrite: bool = False
    #: a JSON file the runner keeps current: counts, the case in flight and the worker's pid (monitoring)
    status_file: Path | None = None
    #: the option that named the output folder, for messages (--output-dir, or --output of the older form)
    output_flag: str = "--output-dir"


@dataclass
class SegmentOptions:
    """What each case's mask is made with."""

    method: str = "region-growing"  # "model" | "region-growing"
    checkpoint: Path | None = None
    predict: PredictOptions = field(default_factory=PredictOptions)
    gate: bool = True
    #: a failed output gate fails the case (nothing written) instead of a warning in its record
    strict: bool = False
    probabilities_dir: Path | None = None
    reference_dir: Path | None = None
    label_selector: str | None = None
    resample_to_ct: bool = False

    def mask_options(self) -> dict[str, Any]:
        """The options that shape the mask (what --continue compares besides the input and model)."""
        if self.method != "model":
            return {"method": self.method}
        opts = {k: v for k, v in self.predict.to_json().items() if k not in EXECUTION_OPTIONS}
        opts["probabilities"] = self.probabilities_dir is not None
        as_read: dict[str, Any] = json.loads(json.dumps(opts))  # tuples -> lists, as a record read back holds them
        return as_read

    def options_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "predict": self.predict.to_json() if self.method == "model" else None,
            "gate": self.gate,
            "strict": self.strict,
            "probabilities_dir": None if self.probabilities_dir is None else str(self.probabilities_dir),
            "reference_dir": None if self.reference_dir is None else str(self.reference_dir),
            "label_selector": self.label_selector,
            "resample_to_ct": self.resample_to_ct,
        }


@dataclass
class CaseRecord:
    """How one case of the run ended."""

    case_id: str
    status: str  # "done" | "skipped" | "failed"
    reason: str = ""
    seconds: float = 0.0
    output: Path | None = None
    record: Path | None = None
    #: what the command prints for the case (voxels, volume, engine, warnings, metrics...)
    result: dict[str, Any] = field(default_factory=dict)


def batch_cases(images: Sequence[tuple[str, Path]], num_parts: int, part_id: int) -> list[tuple[str, Path]]:
    """The cases of part ``part_id`` of ``num_parts``: round-robin over the cases sorted by name
    (case ``i`` -> part ``i % num_parts``), so the parts are disjoint, cover every case and are
    about equally long whatever the order of case sizes."""
    if num_parts < 1:
        raise ConfigError(f"--num-parts {num_parts} must be at least 1.", "Give the number of parts, e.g. 8.")
    if not 0 <= part_id < num_parts:
        raise ConfigError(
            f"--part-id {part_id} is out of range for --num-parts {num_parts}.",
            f"Give a part id from 0 to {num_parts - 1} (a SLURM array of {num_parts} tasks numbered from 0: "
            "--part-id $SLURM_ARRAY_TASK_ID).",
        )
    ordered = sorted(images, key=lambda c: (c[0], str(c[1])))
    return ordered[part_id::num_parts]


def plan_batch(
    input_dir: str | Path, output_dir: str | Path, options: BatchOptions, segment: SegmentOptions
) -> list[Case]:
    """This part's cases with their output, probabilities and reference paths."""
    from core.casenames import case_id, list_references, mask_name, probabilities_name

    src = Path(input_dir)
    if not src.is_dir():
        raise InputError("The input is not a folder of cases.", "Give a folder with --input-dir.", path=src)
    found = find_cases(src)
    if found == [(src.name, src)]:
        raise InputError(
            "The input folder is one DICOM series, not a folder of cases.",
            "Segment it with --input FOLDER --output MASK, or give the folder that holds the series.",
            path=src,
        )
    references: dict[str, Path] = {}
    if segment.reference_dir is not None:
        if not segment.reference_dir.is_dir():
            raise InputError(
                "--reference must be a folder of labels for a folder of cases.",
                "Give a folder of labels named like the cases.",
                path=segment.reference_dir,
            )
        references = list_references(segment.reference_dir)
    # checked over every case, not this part's: two images of one case in two parts would write one mask twice
    ids = [case_id(name) for name, _ in found]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InputError(
            f"Several images belong to one case ({', '.join(twice)}): their masks would overwrite each other.",
            "Keep one image per case in the input folder (CASE_0000.nii.gz, or CASE.nii.gz).",
            path=src,
        )
    out = Path(output_dir)
    plan = []
    for name, path in batch_cases(found, options.num_parts, options.part_id):
        prob = None if segment.probabilities_dir is None else segment.probabilities_dir / probabilities_name(name)
        plan.append(Case(name, path, out / mask_name(name), prob, references.get(case_id(name))))
    return plan


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One case on its way through the pipeline."""

    case: Case
    expected_content: str | None = None  # --continue: the content key the case's record names
    redone: str | None = None  # --continue: why a case that has outputs is segmented again
    #: the CT until the worker has it (then only its grid is kept: waiting results hold masks, not CTs)
    ct: IntensityVolume | None = None
    geometry: Geometry | None = None
    reference: LabelVolume | None = None
    warnings: list[str] = field(default_factory=list)
    file_key: str | None = None
    content_key: str = ""
    error: str | None = None
    skipped: str | None = None
    result: dict[str, Any] | None = None
    arrays: list[Any] = field(default_factory=list)
    #: seconds this case spent being read, segmented (in the worker, the transfer included) and written;
    #: time waiting in a queue is not counted
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, AirwayError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"


class BatchRun:
    """One run of :func:`run_batch` (an object so that its threads share state plainly)."""

    def __init__(
        self,
        cases: list[Case],
        output_dir: Path,
        options: BatchOptions,
        segment: SegmentOptions,
        progress: Progress | None,
        cancel: Cancellable | None,
        on_case: Callable[[CaseRecord], None] | None,
        say: Callable[[str], None],
    ):
        self.cases = cases
        self.output_dir = output_dir
        self.options = options
        self.segment = segment
        self.progress = progress
        self.cancel = cancel
        self.on_case = on_case
        self.say = say
        self.model: ModelInfo | None = (
            model_info(segment.checkpoint) if segment.method == "model" and segment.checkpoint else None
        )
        self.mask_options = segment.mask_options()
        self.records: list[CaseRecord] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.total = 0
        self.in_flight: str | None = None
        self.worker_pid: int | None = None
        self.worker_starts = 0
        self.worker_info: dict[str, Any] = {}
        #: cases of this run's work that ended (those --continue skipped up front are not work)
        self.finished = 0

    # -- bookkeeping -------------------------------------------------------------------------------
    def finish(self, record: CaseRecord, work: bool = True) -> None:
        """A case ended (``work``: one this run read or segmented, counted on the progress)."""
        with self.lock:
            self.records.append(record)
            if work:
                self.finished += 1
                if self.progress is not None:
                    self.progress(self.finished, self.total, _ended_text(record))
            if self.on_case is not None:
                self.on_case(record)

    def write_status(self) -> None:
        if self.options.status_file is None:
            return
        from core.staging import atomic_write_text

        with self.lock:
            counts = {s: sum(1 for r in self.records if r.status == s) for s in STATUSES}
            status = {
                "part_id": self.options.part_id,
                "num_parts": self.options.num_parts,
                "cases": len(self.cases),
                **counts,
                "in_flight": self.in_flight,
                "worker_pid": self.worker_pid,
                "worker_starts": self.worker_starts,
                "updated": time.time(),
            }
        atomic_write_text(self.options.status_file, json.dumps(status, indent=1))

    def inner_progress(self, done: float, total: float, message: str) -> None:
        if self.progress is None:
            return
        with self.lock:
            frac = min(done / total, 0.99) if total > 0 else 0.0
            name = self.in_flight or ""
            self.progress(min(self.finished + frac, self.total), self.total, f"{name}: {message}" if message else name)

    # -- planning ----------------------------------------------------------------------------------
    def triage(self) -> list[_Item]:
        """--continue: the cases whose outputs say they are up to date are skipped here (by the input's bytes);
        the rest are checked before anything runs (core.outputs policy)."""
        from core.outputs import OutputPlan

        todo: list[_Item] = []
        for case in self.cases:
            item = _Item(case)
            if self.options.resume:
                record = read_record(record_path(case.output))
                why = why_redone(record, case.output, self.segment.method, self.model, self.mask_options)
                if case.probabilities is not None and not case.probabilities.is_file():
                    why = "no probability map"
                if why is None and record is not None:
                    file_key, content = input_keys(record)
                    if file_key is not None and input_file_key(case.ct) == file_key:
                        self.finish(self.skip_record(case, "unchanged"), work=False)
                        continue
                    item.expected_content = content
                    why = "the input changed"
                if case.output.exists() or record is not None:
                    item.redone = why
            todo.append(item)
        # --continue replaces what it redoes (keeping the first original as NAME.bak); else --overwrite decides
        outputs = OutputPlan(self.options.overwrite or self.options.resume, [])
        for item in todo:
            c = item.case
            outputs.add_input(c.ct)
            outputs.add_input(c.reference)
            outputs.add(c.output, self.options.output_flag)
            outputs.add(c.probabilities, "--probabilities")
            outputs.add(record_path(c.output), self.options.output_flag)
        outputs.check()
        return todo

    def skip_record(self, case: Case, reason: str) -> CaseRecord:
        return CaseRecord(
            _case_id(case),
            "skipped",
            reason,
            0.0,
            case.output,
            record_path(case.output),
            {"case": case.name, "status": "skipped", "reason": reason, "mask": str(case.output)},
        )

    # -- the three stages --------------------------------------------------------------------------
    def load(self, item: _Item) -> _Item:
        """Read and check a case's inputs (a loader thread); --continue: an input whose voxels and grid are
        those of its record is skipped even when its bytes changed (re-saved, recompressed)."""
        from core.outputs import content_key

        t0 = time.perf_counter()
        try:
            item.file_key = input_file_key(item.case.ct)
            ct, item.reference, item.warnings = read_case_inputs(
                item.case, self.segment.label_selector, self.segment.resample_to_ct
            )
            item.ct, item.geometry = ct, ct.geometry
            item.content_key = content_key(ct)
        except Exception as exc:  # noqa: BLE001 - one case's failure; the run goes on
            item.error = _reason(exc)
            item.ct = item.reference = None
            return item
        finally:
            item.timings["read"] = time.perf_counter() - t0
        if item.expected_content is not None and item.content_key == item.expected_content:
            item.skipped = "unchanged (same voxels and grid)"
            item.ct = item.reference = None
        return item

    def infer(self, item: _Item, worker: Any) -> _Item:
        """Segment the case in the worker (the inference loop's thread)."""
        from core.segmentation.batch_worker import CaseFailed, WorkerDied

        ct = item.ct
        if item.error is not None or item.skipped is not None or ct is None:
            return item
        with self.lock:
            self.in_flight = _case_id(item.case)
        t0 = time.perf_counter()
        try:
            worker.ensure(self.cancel)
            self.worker_pid = worker.pid
            self.worker_starts = worker.starts
            self.write_status()
            done = worker.segment(item.case.name, ct, self.inner_progress, self.cancel)
            item.result, item.arrays = done.info, done.arrays
        except CaseFailed as exc:
            item.error = str(exc.error)
        except WorkerDied as exc:
            item.error = str(exc)
            self.say(f"{item.case.name}: {exc}; a fresh worker takes the next case")
        finally:
            item.ct = None  # the worker had it; writing needs only its grid
            item.timings["segment"] = time.perf_counter() - t0
            with self.lock:
                self.in_flight = None
        return item

    def export(self, item: _Item) -> None:
        """Write the case's mask, probabilities and record together (an exporter thread), then report it."""
        case = item.case
        if item.skipped is not None:
            self.finish(self.skip_record(case, item.skipped))
            return
        if item.error is not None or item.result is None or item.geometry is None:
            reason = item.error or "no result"
            self.finish(_failed_record(case, reason, item.seconds))
            return
        t0 = time.perf_counter()
        try:
            result = self.write(item)
        except Exception as exc:  # noqa: BLE001 - a full disk fails this case; the run goes on
            reason = _reason(exc)
            self.finish(_failed_record(case, reason, item.seconds))
            return
        finally:
            item.reference, item.arrays = None, []
            item.timings["write"] = time.perf_counter() - t0
        # read / segment / write seconds of this case (the record, written before the write ended, lacks "write")
        result["timings"] = {k: round(v, 3) for k, v in item.timings.items()}
        self.finish(
            CaseRecord(
                _case_id(case),
                "done",
                "",
                item.seconds,
                case.output,
                record_path(case.output),
                result,
            )
        )

    def write(self, item: _Item) -> dict[str, Any]:
        from core.outputs import OutputPlan

        case = item.case
        assert item.result is not None and item.geometry is not None
        reference, warnings, geometry = item.reference, item.warnings, item.geometry
        info = item.result
        mask = LabelVolume(item.arrays[0], geometry, name=f"{case.name}_airway")
        voxels = int(item.arrays[0].sum())
        result: dict[str, Any] = {
            "case": case.name,
            "status": "done",
            "mask": str(case.output),
            "record": str(record_path(case.output)),
            "probabilities": str(case.probabilities) if case.probabilities else None,
            "voxels": voxels,
            "volume_ml": round(voxels * geometry.voxel_volume_mm3 / 1000.0, 3),
            **{k: v for k, v in info.items() if k not in ("warnings", "volume_ml")},
            "warnings": [*warnings, *info.get("warnings", [])],
        }
        if item.redone is not None:
            result["redone"] = item.redone  # --continue: why the earlier mask was replaced
        if reference is not None:
            result["metrics"] = evaluate_mask(mask, reference, mask.spacing_zyx)
        record = build_record(
            case=_case_id(case),
            image=case.ct,
            mask=case.output,
            probabilities=case.probabilities,
            input_key=item.file_key,
            content_key=item.content_key,
            method=self.segment.method,
            model=self.model,
            mask_options=self.mask_options,
            options=self.segment.options_json(),
            result=result,
            part=(self.options.part_id, self.options.num_parts),
        )
        for key in ("metrics", "redone"):
            if key in result:
                record[key] = result[key]
        # the write's own time is not known before the record is; the record says read and segment
        record["timings"] = {k: round(v, 3) for k, v in item.timings.items()}
        # the record is committed last: a mask without its record is redone by --continue
        with OutputPlan(overwrite=True, inputs=[case.ct, case.reference]) as outputs:
            outputs.write_volume(mask, case.output)
            if case.probabilities is not None and len(item.arrays) > 1:
                outputs.write_volume(IntensityVolume(item.arrays[1], geometry), case.probabilities)
            outputs.write_text(record_path(case.output), json.dumps(record, indent=1) + "\n")
        return result

    # -- driving -----------------------------------------------------------------------------------
    def run(self) -> list[CaseRecord]:
        from core.segmentation.batch_worker import Worker

        todo = self.triage()
        self.total = len(todo)
        skipped = len(self.records)
        part = f" (part {self.options.part_id} of {self.options.num_parts})" if self.options.num_parts > 1 else ""
        if skipped:
            self.say(f"{skipped} case(s) unchanged since their record, skipped (--continue)")
        if not todo:
            self.write_status()
            return list(self.records)
        setup = {
            "method": self.segment.method,
            "checkpoint": None if self.segment.checkpoint is None else str(self.segment.checkpoint),
            "options": self.segment.predict.to_json() if self.segment.method == "model" else {},
            "gate": self.segment.gate,
            "strict": self.segment.strict,
            "probabilities": self.segment.probabilities_dir is not None,
        }
        if self.progress is not None:
            # the clock of the rate and ETA starts here: loading the model is part of the run's time
            self.progress(0, self.total, "loading the model" if self.model is not None else "starting")
        worker = Worker(setup)
        ended_cleanly = False
        try:
            self.worker_info = worker.start(self.cancel)
            self.worker_pid = worker.pid
            self.worker_starts = worker.starts
            what = (
                f"model {self.model.name}, {self.worker_info.get('describe', '')}"
                if self.model is not None
                else "training-free region growing (no model)"
            )
            self.say(
                f"{len(todo)} case(s){part}, {what}; "
                f"{self.options.workers_load} loader(s), {self.options.workers_export} exporter(s)"
            )
            self.write_status()
            self._pipeline(todo, worker)
            ended_cleanly = True
        finally:
            self.stop.set()
            # interrupted (Ctrl+C, cancel, an error): the case in flight is abandoned at once
            worker.close(kill=not ended_cleanly)
            self.worker_pid = None
            self.write_status()
        return list(self.records)

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _pipeline(self, todo: list[_Item], worker: Any) -> None:
        loaders, exporters = max(0, self.options.workers_load), max(0, self.options.workers_export)
        threads: list[threading.Thread] = []
        errors: list[BaseException] = []
        pending: queue.Queue[_Item | None] = queue.Queue()
        for item in todo:
            pending.put(item)
        # at most one read case waits here, plus one per loader being read: loaders + 1 ahead of inference
        loaded: queue.Queue[_Item] = queue.Queue(maxsize=1)
        # at most ``exporters`` results wait to be written (each being written holds one more)
        written: queue.Queue[_Item | None] = queue.Queue(maxsize=max(1, exporters))

        def put(q: queue.Queue[Any], value: Any) -> bool:
            while not self.stop.is_set():
                try:
                    q.put(value, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def load_loop() -> None:
            while not self.stop.is_set():
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                if item is None or not put(loaded, self.load(item)):
                    return

        def export_loop() -> None:
            while True:
                item = written.get()
                if item is None:
                    return
                try:
                    self.export(item)
                except BaseException as exc:  # noqa: BLE001 - e.g. stdout closed: the main thread re-raises it
                    errors.append(exc)
                    self.stop.set()

        for i in range(loaders):
            threads.append(threading.Thread(target=load_loop, name=f"batch-loader-{i}", daemon=True))
        exporter_threads = [
            threading.Thread(target=export_loop, name=f"batch-exporter-{i}", daemon=True) for i in range(exporters)
        ]
        for t in [*threads, *exporter_threads]:
            t.start()
        try:
            for _ in range(len(todo)):
                if self._cancelled():
                    raise Cancelled("Batch segmentation cancelled.")
                if errors:
                    break
                if loaders:
                    item = self._get(loaded, threads)
                else:
                    nxt = pending.get_nowait()
                    assert nxt is not None
                    item = self.load(nxt)
                item = self.infer(item, worker)
                if exporters:
                    if not put(written, item):
                        break
                else:
                    self.export(item)
        finally:
            for _ in exporter_threads:
                written.put(None)
            for t in exporter_threads:
                t.join()
            self.stop.set()
            for t in threads:
                t.join(timeout=10)
        if errors:
            raise errors[0]

    def _get(self, q: queue.Queue[_Item], loaders: list[threading.Thread]) -> _Item:
        while True:
            if self._cancelled():
                raise Cancelled("Batch segmentation cancelled.")
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in loaders) and q.empty():
                    raise RuntimeError("the loader threads ended before every case was read") from None


def _ended_text(record: CaseRecord) -> str:
    if record.status == "done":
        r = record.result
        how = f"{r['windows']} windows, {r.get('backend')}" if "windows" in r else str(r.get("backend", ""))
        return f"{record.case_id}: done in {record.seconds:.1f} s ({how})"
    return f"{record.case_id}: {record.status} ({record.reason[:80]})"


def _failed_record(case: Case, reason: str, seconds: float) -> CaseRecord:
    """A case that produced no mask: no output, no record file, the reason in the run's summary."""
    return CaseRecord(
        _case_id(case), "failed", reason, seconds, None, None, {"case": case.name, "status": "failed", "reason": reason}
    )


def _case_id(case: Case) -> str:
    from core.casenames import case_id

    return case_id(case.name)


def run_batch(
    input_dir: str | Path,
    output_dir: str | Path,
    options: BatchOptions | None = None,
    segment: SegmentOptions | None = None,
    *,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
    on_case: Callable[[CaseRecord], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> list[CaseRecord]:
    """Segment this part's cases of ``input_dir`` into ``output_dir`` (module doc); one record per case.

    ``progress(done, total, message)``: cases finished (fractions while one runs) of those this run
    segments; ``on_case``: each case's :class:`CaseRecord` as it ends (from the thread that ended it);
    ``say``: one-line messages. Errors of the whole run (no such folder, outputs that exist without
    ``overwrite``/``resume``, a model that does not load) raise; a case's failure is its record.
    """
    options = options or BatchOptions()
    segment = segment or SegmentOptions()
    if segment.method not in ("model", "region-growing"):
        raise ConfigError(f"Unknown method '{segment.method}'.", "Use model or region-growing.")
    if segment.method == "model" and segment.checkpoint is None:
        raise ConfigError("A model run needs a checkpoint.", "Give --model CKPT.")
    if segment.method != "model" and segment.probabilities_dir is not None:
        raise ConfigError(
            "--probabilities needs a model: region growing makes no probability map.",
            "Drop --probabilities, or use --method model --model CKPT.",
        )
    if options.workers_load < 0 or options.workers_export < 0:
        raise ConfigError("--loaders and --exporters cannot be negative.", "Give 0 (no overlap) or more.")
    cases = plan_batch(input_dir, output_dir, options, segment)
    run = BatchRun(cases, Path(output_dir), options, segment, progress, cancel, on_case, say or (lambda _: None))
    return run.run()


def summary_lines(records: Sequence[CaseRecord]) -> list[str]:
    """The end-of-run summary: counts, then one line per failed case with its reason."""
    counts = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    lines = [f"done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}"]
    lines += [f"failed: {r.case_id}: {r.reason}" for r in records if r.status == "failed"]
    return lines
