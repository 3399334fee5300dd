"""``airway segment``: airway masks (and probability maps) for one CT, a DICOM folder or a folder of cases.

One CT (a file or a DICOM series) is segmented here, in this process. A folder of cases
(``--input-dir IN --output-dir OUT``, or ``--input FOLDER --output FOLDER``, the same route) goes
through the batch runner (:mod:`core.segmentation.batch`): the model loaded once in a worker process,
reading, inference and writing overlapped, ``--continue``, ``--num-parts/--part-id``, a record per
case, failed cases reported at the end with exit status 1 (docs/batch.md).

Heavy modules (torch, the volume IO packages, the backends) are imported inside the handler
so ``airway --help`` stays fast. Outputs are written only after a case is fully
segmented, atomically (core.io.write_volume), so a cancelled or failed run
leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from core.progress import Cancellable, Progress
from core.resources import SHIPPED_MODEL as DEMO_MODEL

if TYPE_CHECKING:
    from core.segmentation import PredictOptions, Predictor
    from core.segmentation.batch import CaseRecord
    from core.segmentation.batch_cases import Case, CaseInputs

#: what core.segmentation.batch_cases holds, importable from here as before (loaded on first use, so that
#: ``airway --help`` does not import the segmentation package)
_CASE_NAMES = ("Case", "CaseInputs", "find_cases", "read_case_inputs", "evaluate_mask")


def __getattr__(name: str) -> Any:
    if name in _CASE_NAMES:
        from core.segmentation import batch_cases

        return getattr(batch_cases, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MASK_SUFFIX = "_airway.nii.gz"
PROB_SUFFIX = "_probabilities.nii.gz"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment the airway tree of one CT, a DICOM folder or a folder of cases",
        description="Sliding-window airway segmentation (WingsNet; Zheng et al. 2021). Writes a mask "
        "(threshold, largest connected component) on the CT's grid and optionally the probability map "
        "(uint8, 255 = 1.0). With --reference, prints the airway metrics right after.",
    )
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "region-growing", "model"),
        help="region-growing: training-free (trachea detection and explosion-controlled growing, no model); "
        "model: a checkpoint (--model, else the bundled model: phantoms plus one pseudo-labelled real chest CT, "
        "at 2.5 mm). "
        "auto (default): model when --model is given, else region-growing",
    )
    p.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint (.pt) for --method model; default: the bundled model (resources/models/realct_wingsnet.pt)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a model mask that fails the output gate (misses the trachea, or > 5%% outside the lungs and "
        "central airways) is an error (exit status 3, nothing written) instead of a warning",
    )
    p.add_argument(
        "--input",
        "-i",
        metavar="CT",
        help="a CT file (.nii/.nii.gz/.mha/.nrrd), a DICOM series folder, or a folder of cases (= --input-dir)",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="MASK",
        help=f"mask file (one case; default CASE{MASK_SUFFIX} in the current folder) or folder (several: "
        "CASE.nii.gz for the image CASE_0000.nii.gz, as airway compare and evaluate match them)",
    )
    batch = p.add_argument_group("folders of cases (docs/batch.md)")
    batch.add_argument("--input-dir", metavar="IN", help="a folder of CTs (files or DICOM series folders)")
    batch.add_argument(
        "--output-dir",
        metavar="OUT",
        help="where OUT/CASE.nii.gz and its record OUT/CASE.json go (default: the current folder)",
    )
    batch.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="skip cases whose mask and record exist and whose record names this input (content key), this "
        "model (checksum) and these mask options; every other case is segmented again",
    )
    batch.add_argument(
        "--num-parts", type=int, default=1, metavar="K", help="split the sorted cases into K parts (default 1)"
    )
    batch.add_argument(
        "--part-id",
        type=int,
        default=0,
        metavar="I",
        help="segment part I (0..K-1): case i of the sorted list belongs to part i %% K",
    )
    batch.add_argument(
        "--loaders", type=int, default=1, metavar="N", help="threads reading the next cases (default 1; 0: none)"
    )
    batch.add_argument(
        "--exporters", type=int, default=1, metavar="N", help="threads writing masks (default 1; 0: none)"
    )
    batch.add_argument(
        "--status",
        metavar="FILE",
        help="keep a JSON status here: counts, the case in flight, the worker's pid (for monitoring)",
    )
    p.add_argument(
        "--probabilities", metavar="F", help="also write the probability map here (file, or folder for several cases)"
    )
    p.add_argument(
        "--reference", metavar="LABEL", help="reference label (file, or folder of CASE files) to evaluate against"
    )
    p.add_argument(
        "--label-selector",
        default=None,
        metavar="SEL",
        help="which reference values are airway: nonzero (default), value:N, bits:SHIFT:N",
    )
    p.add_argument(
        "--resample-to-ct",
        action="store_true",
        help="resample a --reference on another grid onto the CT's (nearest neighbour); without it, an error",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--backend",
        default="auto",
        help="CPU engine: auto (fastest installed that agrees with fp32: onnxruntime, openvino-fp32, torch), "
        "torch, openvino (= openvino-fp32), openvino-bf16 (fastest, less exact), onnxruntime",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="windows per forward pass (default: 1 on CPU, by memory on GPU)",
    )
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="window side in voxels (default: the checkpoint's own, else the paper's 128)",
    )
    p.add_argument(
        "--step", type=int, default=None, help="window step in voxels (default: the checkpoint's own, else 64)"
    )
    p.add_argument(
        "--spacing",
        nargs="+",
        default=None,
        metavar="MM",
        help="resample to this spacing (x y z mm) before the network, or 'native' (default: the "
        "checkpoint's recommendation if it has one, else native as in the paper)",
    )
    p.add_argument(
        "--gaussian", action="store_true", default=None, help="Gaussian window weighting instead of the plain mean"
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="the paper's procedure: step of half a window (the checkpoint's own), plain mean, every window, "
        "fp32 (eager PyTorch on the CPU, no autocast on a GPU); slower. Default: the measured fastest "
        "that agrees with it (the same grid, only windows touching the lungs and trachea, bf16 "
        "where the CPU or GPU has it); see resources/presets/inference.json",
    )
    p.add_argument(
        "--region",
        default=None,
        choices=("none", "lung", "coarse"),
        help="which windows run: none = all (paper), lung = those touching the lungs and trachea "
        "(default), coarse = those where a half-resolution pass of the network finds airway",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument(
        "--connectivity", type=int, default=26, choices=(6, 18, 26), help="for the largest component (default 26)"
    )
    p.add_argument("--all-components", action="store_true", help="keep every component, not only the largest")
    p.add_argument("--fill-holes", action="store_true", help="fill enclosed holes of the mask")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (the first original is kept as NAME.bak, never replaced later)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per case on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


# -- cases -----------------------------------------------------------------------


def is_folder_of_cases(path: str | Path) -> bool:
    """A folder that holds cases (not itself one DICOM series): the batch route."""
    from core.io import list_dicom_series

    p = Path(path)
    return p.is_dir() and not list_dicom_series(p)


def plan_cases(args: argparse.Namespace) -> list[Case]:
    """The one case of a CT file or DICOM series and where its outputs go; refuses existing outputs
    unless --overwrite. (A folder of cases goes through :func:`handle_batch`.)"""
    from core.errors import InputError
    from core.io import VOLUME_SUFFIXES, volume_suffix
    from core.segmentation.batch_cases import Case, find_cases

    if args.reference and not Path(args.reference).exists():
        raise InputError("Reference label not found.", "Check the path given with --reference.", path=args.reference)
    if args.reference and Path(args.reference).is_dir():
        raise InputError(
            "--reference is a folder but the input is one CT.",
            "Give the reference label file of this CT, or segment a folder of cases (--input-dir).",
            path=args.reference,
        )
    plan: list[Case] = []
    for name, path in find_cases(args.input):
        output = Path(args.output) if args.output else Path.cwd() / f"{name}{MASK_SUFFIX}"
        prob = Path(args.probabilities) if args.probabilities else None
        for target in (output, prob):
            if target is not None and volume_suffix(target) not in VOLUME_SUFFIXES:
                raise InputError(
                    f"Cannot write '{target.name}': unknown volume format.",
                    "End output names with .nii.gz, .nii, .mha or .nrrd.",
                    path=target,
                )
        plan.append(Case(name, path, output, prob, Path(args.reference) if args.reference else None))
    check_outputs(plan, args.overwrite)
    return plan


def check_outputs(plan: list[Case], overwrite: bool) -> None:
    """Every case's outputs, checked before any model is loaded (core.outputs policy)."""
    from core.outputs import OutputPlan

    outputs = OutputPlan(overwrite, [p for c in plan for p in (c.ct, c.reference)])
    for c in plan:
        outputs.add(c.output, "--output")
        outputs.add(c.probabilities, "--probabilities")
    outputs.check()


def model_path(args_model: str | None) -> Path:
    """The checkpoint to use: --model, else the bundled model (core.resources.SHIPPED_MODEL)."""
    from core.errors import CheckpointError
    from core.resources import resource_path, shipped_model_path

    if args_model:
        return Path(args_model)
    demo = shipped_model_path()
    if demo is None:
        missing = resource_path(*DEMO_MODEL, must_exist=False)
        raise CheckpointError(
            f"No --model given and the bundled model is not installed ({missing} does not exist yet).",
            "Pass a checkpoint with --model PATH (e.g. RUN/checkpoints/best.pt from `airway train`).",
        )
    return demo


# -- one case ----------------------------------------------------------------------


def segment_case(
    predictor: Predictor,
    case: Case,
    selector: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
    inputs: CaseInputs | None = None,
    resample: bool = False,
    gate: bool = True,
    strict: bool = False,
) -> dict[str, Any]:
    """Segment one case, write its outputs (only once all is done), evaluate if it has a reference.

    ``inputs``: what :func:`read_case_inputs` returned, when the caller read them already.
    ``gate``: check the mask against the CT's trachea and lungs (core.segmentation.segment_and_gate); a
    failure is a warning in the result, or with ``strict`` a QualityError before anything is written.
    """
    from core.outputs import OutputPlan
    from core.segmentation import segment_and_gate
    from core.segmentation.batch_cases import evaluate_mask, read_case_inputs

    ct, reference, warnings = inputs if inputs is not None else read_case_inputs(case, selector, resample)
    done = segment_and_gate(predictor, ct, gate=gate, strict=strict, progress=progress, cancel=cancel)
    pred = done.prediction
    # overwriting was allowed (or the outputs were new) when the run was planned; the mask and the
    # probabilities land together, and the first original of each is kept as .bak
    with OutputPlan(overwrite=True, inputs=[case.ct, case.reference]) as outputs:
        outputs.write_volume(pred.mask, case.output)
        if case.probabilities is not None:
            outputs.write_volume(pred.probabilities, case.probabilities)
    result: dict[str, Any] = {
        "case": case.name,
        "mask": str(case.output),
        "probabilities": str(case.probabilities) if case.probabilities else None,
        "voxels": int(pred.mask.array.sum()),
        "volume_ml": round(float(pred.mask.array.sum()) * ct.geometry.voxel_volume_mm3 / 1000.0, 3),
        "windows": pred.windows,
        "windows_total": pred.windows_total,
        "backend": pred.backend,
        "seconds": round(pred.seconds, 2),
        "method": "model",
        "warnings": [*warnings, *done.warnings],
    }
    if done.gate is not None:
        result["gate"] = done.gate_dict()
    if reference is not None:
        result["metrics"] = evaluate_mask(pred.mask, reference, ct.spacing_zyx)
    return result


def grow_case(
    case: Case,
    selector: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
    inputs: CaseInputs | None = None,
    resample: bool = False,
) -> dict[str, Any]:
    """The training-free method (core.growing) on one case; InputError (nothing written) without a trachea."""
    from core.growing import grow_airway
    from core.outputs import OutputPlan
    from core.segmentation.batch_cases import evaluate_mask, read_case_inputs

    ct, reference, warnings = inputs if inputs is not None else read_case_inputs(case, selector, resample)
    grown = grow_airway(ct, progress=progress, cancel=cancel)
    with OutputPlan(overwrite=True, inputs=[case.ct, case.reference]) as outputs:
        outputs.write_volume(grown.mask, case.output)
    result: dict[str, Any] = {
        "case": case.name,
        "mask": str(case.output),
        "probabilities": None,
        "voxels": int(grown.mask.array.sum()),
        "volume_ml": round(grown.volume_ml, 3),
        "method": "region-growing",
        "threshold_hu": grown.threshold_hu,
        "trachea_mm": round(grown.trachea.length_mm, 1),
        "seconds": round(grown.seconds, 2),
        "warnings": list(warnings),
    }
    if reference is not None:
        result["metrics"] = evaluate_mask(grown.mask, reference, ct.spacing_zyx)
    return result


# -- progress bar ------------------------------------------------------------------


class ProgressBar:
    """A :data:`core.progress.Progress` on stderr: a bar and the job's message (the predictor's says how many
    windows are done and about how long the rest takes); ``unit``: also "done/total unit" before the message.
    Redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30, unit: str | None = None):
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def __call__(self, done: float, total: float, message: str = "") -> None:
        frac = done / max(total, 1)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        count = f"{int(done)}/{int(total)} {self.unit}" if self.unit else ""
        text = f"{self.label} [{bar}] " + ": ".join(t for t in (count, message) if t)
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= total else ""))
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile or done >= total:
                self._last_decile = decile
                self.stream.write(text + "\n")
                self.stream.flush()


def _result_lines(result: dict[str, Any], as_json: bool) -> list[tuple[str, TextIO]]:
    """What a finished case prints: its line (or JSON object) on stdout, warnings on stderr, metrics."""
    if as_json:
        return [(json.dumps(result), sys.stdout)]
    if result.get("method") == "region-growing":
        how = f"region growing, {result['threshold_hu']:.0f} HU, {result['seconds']} s"
    else:
        how = f"{result['windows']} windows, {result['backend']}, {result['seconds']} s"
    line = f"{result['case']}: {result['voxels']} airway voxels ({result['volume_ml']} ml) -> {result['mask']} [{how}]"
    if result.get("redone"):
        line += f" (segmented again: {result['redone']})"
    lines = [(line, sys.stdout)]
    lines += [(f"{result['case']}: warning: {w}", sys.stderr) for w in result.get("warnings") or ()]
    metrics = result.get("metrics")
    if metrics:
        parts = [
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in metrics.items()
            if isinstance(v, (int, float))
        ]
        lines.append((f"{result['case']}: " + ", ".join(parts), sys.stdout))
    return lines


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    for line, stream in _result_lines(result, as_json):
        print(line, file=stream, flush=True)


def _spacing_arg(values: list[str] | None) -> str | list[float] | None:
    if values is None:
        return None
    if values == ["native"]:
        return "native"
    try:
        spacing = [float(v) for v in values]
    except ValueError:
        spacing = []
    if len(spacing) != 3:
        from core.errors import ConfigError

        raise ConfigError(
            f"--spacing {' '.join(values)} is not three numbers.",
            "Give x y z in mm (e.g. --spacing 1 1 1) or 'native'.",
        )
    return spacing


def resolve_method(args: argparse.Namespace) -> str:
    """auto -> model only when a checkpoint was named: the shipped model finds fewer branches than
    region growing on the real chest CT and has seen one real CT (issue 11), so it is not the silent default."""
    method = getattr(args, "method", "auto") or "auto"
    if method == "auto":
        return "model" if args.model else "region-growing"
    return method


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The command line's choices as the predictor's options."""
    from core.segmentation import PostProcessing, PredictOptions

    return PredictOptions(
        device=args.device,
        window=args.window,
        step=args.step,
        batch_size=args.batch_size,
        gaussian=args.gaussian,
        backend=args.backend,
        mode="exact" if args.exact else "fast",
        region=args.region,
        postprocess=PostProcessing(
            threshold=args.threshold,
            largest_component=not args.all_components,
            connectivity=args.connectivity,
            fill_holes=args.fill_holes,
        ),
        spacing=_spacing_arg(args.spacing),
        threads=args.threads,
    )


def _say(text: str) -> None:
    print(f"airway segment: {text}", file=sys.stderr, flush=True)


#: options that only mean something for a folder of cases, with their defaults
BATCH_ONLY = {"resume": False, "num_parts": 1, "part_id": 0, "status": None}


def handle(args: argparse.Namespace) -> int:
    from core.errors import ConfigError

    if args.input_dir and args.input:
        raise ConfigError("Both --input and --input-dir were given.", "Give one: --input-dir for a folder of cases.")
    if not (args.input_dir or args.input):
        raise ConfigError("No input given.", "Give --input CT (one case) or --input-dir FOLDER (a folder of cases).")
    if args.output_dir and args.output:
        raise ConfigError("Both --output and --output-dir were given.", "Give one: --output-dir for a folder of cases.")
    if args.input_dir or is_folder_of_cases(args.input):
        return handle_batch(args)
    if args.output_dir:
        raise ConfigError("--output-dir is for a folder of cases.", "Give --output MASK for one CT.")
    asked = [
        f"--{k.replace('_', '-').replace('resume', 'continue')}" for k, v in BATCH_ONLY.items() if getattr(args, k) != v
    ]
    if asked:
        raise ConfigError(
            f"{', '.join(asked)} only apply to a folder of cases; the input is one CT.",
            "Give a folder with --input-dir, or drop these options.",
        )
    return handle_one(args)


def handle_batch(args: argparse.Namespace) -> int:
    """A folder of cases through core.segmentation.batch; exit status 1 when any case failed."""
    from core.segmentation.batch import BatchOptions, SegmentOptions, run_batch, summary_lines
    from core.segmentation.batch_progress import CaseBar

    method = resolve_method(args)
    reference = Path(args.reference) if args.reference else None
    if reference is not None and not reference.is_dir():
        from core.errors import InputError

        raise InputError(
            "--reference is a single file but the input holds several cases."
            if reference.exists()
            else "Reference folder not found.",
            "Give a folder of labels named like the cases, or segment one case.",
            path=reference,
        )
    segment = SegmentOptions(
        method=method,
        checkpoint=model_path(args.model) if method == "model" else None,
        predict=predict_options(args) if method == "model" else SegmentOptions().predict,
        strict=args.strict,
        probabilities_dir=Path(args.probabilities) if args.probabilities else None,
        reference_dir=reference,
        label_selector=args.label_selector,
        resample_to_ct=args.resample_to_ct,
    )
    options = BatchOptions(
        workers_load=args.loaders,
        workers_export=args.exporters,
        num_parts=args.num_parts,
        part_id=args.part_id,
        resume=args.resume,
        overwrite=args.overwrite,
        status_file=Path(args.status) if args.status else None,
        output_flag="--output" if args.output else "--output-dir",
    )
    bar = CaseBar(enabled=not args.quiet)

    def on_case(record: CaseRecord) -> None:
        if record.status == "done":
            for line, stream in _result_lines(record.result, args.json):
                bar.write(line, stream)
        elif args.json:
            bar.write(json.dumps(record.result))
        elif record.status == "failed":
            bar.write(f"airway segment: {record.case_id}: failed: {record.reason}", sys.stderr)

    def say(text: str) -> None:
        if not args.quiet:
            bar.write(f"airway segment: {text}", sys.stderr)

    t0 = time.perf_counter()
    try:
        records = run_batch(
            args.input_dir or args.input,
            args.output_dir or args.output or Path.cwd(),
            options,
            segment,
            progress=bar,
            on_case=on_case,
            say=say,
        )
    finally:
        bar.close()
    failed = any(r.status == "failed" for r in records)
    lines = summary_lines(records)
    if failed or not args.quiet:
        lines[0] += f" in {time.perf_counter() - t0:.1f} s"
        for line in lines:
            _say(line)
    return 1 if failed else 0


def handle_one(args: argparse.Namespace) -> int:
    """One CT (a file or a DICOM series), in this process."""
    from core.segmentation import Predictor
    from core.segmentation.batch_cases import read_case_inputs

    plan = plan_cases(args)
    method = resolve_method(args)
    # the case's inputs are read and checked before the model is loaded or exported
    first_inputs: CaseInputs | None = read_case_inputs(plan[0], args.label_selector, args.resample_to_ct)
    say = _say

    if method == "region-growing":
        if args.probabilities:
            from core.errors import ConfigError

            raise ConfigError(
                "--probabilities needs a model: region growing makes no probability map.",
                "Drop --probabilities, or use --method model --model CKPT.",
            )
        if not args.quiet:
            say(f"{len(plan)} case(s), training-free region growing (no model)")
        for i, case in enumerate(plan, 1):
            bar = None if args.quiet else ProgressBar(f"[{i}/{len(plan)}] {case.name}", unit="steps")
            _print_result(
                grow_case(
                    case,
                    args.label_selector,
                    progress=bar,
                    inputs=first_inputs if i == 1 else None,
                    resample=args.resample_to_ct,
                ),
                args.json,
            )
            first_inputs = None
        return 0
    ckpt = model_path(args.model)

    predictor = Predictor(ckpt, predict_options(args), say=say)
    if not args.quiet:
        say(
            f"{len(plan)} case(s), model {ckpt.name}, {predictor.describe()}, "
            f"{'exact (paper) procedure' if args.exact else 'fast mode (--exact for the paper procedure)'}"
        )
    for i, case in enumerate(plan, 1):
        bar = None if args.quiet else ProgressBar(f"[{i}/{len(plan)}] {case.name}")
        result = segment_case(
            predictor,
            case,
            args.label_selector,
            progress=bar,
            inputs=first_inputs if i == 1 else None,
            resample=args.resample_to_ct,
            strict=args.strict,
        )
        first_inputs = None
        _print_result(result, args.json)
    return 0
