"""``airway segment``: airway masks (and probability maps) for one CT, a DICOM folder or a folder of cases.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from core.progress import Cancellable, Progress
from core.resources import SHIPPED_MODEL as DEMO_MODEL

if TYPE_CHECKING:
    from core.segmentation import PredictOptions, Predictor
    from core.volume import IntensityVolume, LabelVolume

#: a case's CT, its reference (or None) and the warnings found reading them
CaseInputs = tuple["IntensityVolume", "LabelVolume | None", list[str]]

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
        required=True,
        metavar="CT",
        help="a CT file (.nii/.nii.gz/.mha/.nrrd), a DICOM series folder, or a folder of cases",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="MASK",
        help=f"mask file (one case; default CASE{MASK_SUFFIX} in the current folder) or folder (several: "
        "CASE.nii.gz for the image CASE_0000.nii.gz, as airway compare and evaluate match them)",
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


@dataclass(frozen=True)
class Case:
    name: str
    ct: Path
    output: Path
    probabilities: Path | None
    reference: Path | None


def find_cases(input_path: str | Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of each CT: a file, a DICOM folder, or the volumes/DICOM folders inside a folder."""
    from core.errors import InputError
    from core.io import VOLUME_SUFFIXES, case_name, list_dicom_series, volume_suffix

    p = Path(input_path)
    if not p.exists():
        raise InputError("Input not found.", "Check the path given with --input.", path=p)
    if p.is_file():
        return [(case_name(p), p)]
    if list_dicom_series(p):
        return [(p.name, p)]
    found: list[tuple[str, Path]] = []
    for child in sorted(p.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and volume_suffix(child) in VOLUME_SUFFIXES:
            found.append((case_name(child), child))
        elif child.is_dir() and list_dicom_series(child):
            found.append((child.name, child))
    if not found:
        raise InputError(
            "No CT found in this folder (no volume files, no DICOM series).",
            "Give a CT file, a DICOM series folder, or a folder holding such cases.",
            path=p,
        )
    return found


def plan_cases(args: argparse.Namespace) -> list[Case]:
    """Where each case's outputs go; refuses existing outputs unless --overwrite."""
    from core.casenames import case_id, list_references, mask_name, probabilities_name
    from core.errors import InputError
    from core.io import VOLUME_SUFFIXES, volume_suffix

    cases = find_cases(args.input)
    several = len(cases) > 1 or (Path(args.input).is_dir() and len(cases) == 1 and cases[0][1] != Path(args.input))
    plan: list[Case] = []
    ref_dir = Path(args.reference) if args.reference and Path(args.reference).is_dir() else None
    if args.reference and not Path(args.reference).exists():
        raise InputError("Reference label not found.", "Check the path given with --reference.", path=args.reference)
    for name, path in cases:
        if several:
            # core.casenames: the image CASE_0000 gets the mask CASE.nii.gz, what compare and evaluate match
            out_dir = Path(args.output) if args.output else Path.cwd()
            output = out_dir / mask_name(name)
            prob = Path(args.probabilities) / probabilities_name(name) if args.probabilities else None
        else:
            output = Path(args.output) if args.output else Path.cwd() / f"{name}{MASK_SUFFIX}"
            prob = Path(args.probabilities) if args.probabilities else None
        for target in (output, prob):
            if target is not None and volume_suffix(target) not in VOLUME_SUFFIXES:
                raise InputError(
                    f"Cannot write '{target.name}': unknown volume format.",
                    "End output names with .nii.gz, .nii, .mha or .nrrd.",
                    path=target,
                )
        reference = None
        if ref_dir is not None:
            reference = list_references(ref_dir).get(case_id(name))
        elif args.reference:
            if several:
                raise InputError(
                    "--reference is a single file but the input holds several cases.",
                    "Give a folder of labels named like the cases, or segment one case.",
                )
            reference = Path(args.reference)
        plan.append(Case(name, path, output, prob, reference))
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


def read_case_inputs(case: Case, selector: str | None = None, resample: bool = False) -> CaseInputs:
    """The case's CT and reference, checked for sanity (core.sanity) before any segmentation.

    ``resample``: a reference on another grid is resampled onto the CT's (nearest
    neighbour, --resample-to-ct) instead of refused.
    """
    from core.io import read_ct, read_label, resample_label_to
    from core.sanity import check_ct, check_label, raise_errors
    from core.volume import check_same_grid

    ct = read_ct(case.ct)
    warnings = [f.message for f in raise_errors(check_ct(ct, case.ct))]
    reference = None
    if case.reference:
        reference = read_label(case.reference, selector, allow_empty=False)
        if resample and (reference.shape != ct.shape or not reference.geometry.matches(ct.geometry, 1e-3)):
            reference = resample_label_to(reference, ct)
            warnings.append(f"{case.reference}: resampled onto the CT's grid (nearest neighbour, --resample-to-ct).")
        check_same_grid(ct, reference)
        raise_errors(check_label(reference, "reference", case.reference, "--label-selector"))
    return ct, reference, warnings


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


def evaluate_mask(mask: Any, reference: Any, spacing_zyx: Any) -> dict[str, Any]:
    from core.errors import InputError

    try:
        from core.metrics import evaluate
    except ImportError:
        raise InputError(
            "Metrics are not available in this installation (core.metrics is missing).",
            "Run without --reference, or update Airway Studio.",
        ) from None
    return evaluate(mask.mask, reference.mask, spacing_zyx).as_dict(branches=False)


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


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    if result.get("method") == "region-growing":
        how = f"region growing, {result['threshold_hu']:.0f} HU, {result['seconds']} s"
    else:
        how = f"{result['windows']} windows, {result['backend']}, {result['seconds']} s"
    line = f"{result['case']}: {result['voxels']} airway voxels ({result['volume_ml']} ml) -> {result['mask']} [{how}]"
    print(line, flush=True)
    for w in result.get("warnings") or ():
        print(f"{result['case']}: warning: {w}", file=sys.stderr, flush=True)
    metrics = result.get("metrics")
    if metrics:
        parts = [
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in metrics.items()
            if isinstance(v, (int, float))
        ]
        print(f"{result['case']}: " + ", ".join(parts), flush=True)


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


def handle(args: argparse.Namespace) -> int:
    from core.segmentation import Predictor

    plan = plan_cases(args)
    method = resolve_method(args)
    # the first case's inputs are read and checked before the model is loaded or exported
    first_inputs: CaseInputs | None = read_case_inputs(plan[0], args.label_selector, args.resample_to_ct)

    def say(text: str) -> None:
        print(f"airway segment: {text}", file=sys.stderr, flush=True)

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
    t0 = time.perf_counter()
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
    if not args.quiet and len(plan) > 1:
        say(f"{len(plan)} cases in {time.perf_counter() - t0:.1f} s")
    return 0
