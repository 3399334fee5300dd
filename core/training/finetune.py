"""Fine-tuning a trained model on a dataset's reviewed references, then comparing old and new.

``airway train --dataset DIR --labels reviewed --init CKPT --preset finetune --out RUN``:

- the cases come from the dataset's frozen split (core.dataset): its "train" part is trained on,
  its "validation" part picks the best epoch, and its "test" part is never read by training (it is
  not even written into the run's case list); after training the start model and the fine-tuned
  one are compared on it (``RUN/compare/report.html``).
- labels: ``reviewed`` trains on ``labelsReviewed/CASE.nii.gz`` only (training cases without one
  are skipped and listed); ``original`` on the dataset's own labels; ``best`` on the reviewed label
  where there is one, else the original. Selection needs cases, so validation cases use the
  reviewed label where there is one and the original otherwise unless ``original`` is asked for.
- the model (architecture, arch_args), its preprocessing, its patch sampling and validation window
  come from the start checkpoint's header; the ``finetune`` preset (resources/configs) gives the
  lower learning rate and the few epochs; a ``--config`` file overrides both.

The run folder gets ``finetune.json`` (what was trained on, skipped, compared) and ``cases.csv``
(the image,label pairs the trainer reads), beside the usual files (core.training.run_files).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import AirwayError, ConfigError, InputError
from core.training.run_files import RunFiles

if TYPE_CHECKING:
    from core.training.config import TrainConfig
    from core.training.trainer import Trainer

LABEL_VERSIONS = ("reviewed", "original", "best")
#: the names the comparison gives the two models
INIT_NAME, FINETUNED_NAME = "init", "finetuned"

Say = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneCase:
    case_id: str
    image: str
    label: str
    version: str  # "reviewed" | "original": which label this case is trained or validated with


@dataclass
class FinetunePlan:
    """What a fine-tuning run trains on (saved as ``RUN/finetune.json``)."""

    dataset: str
    labels: str
    init: str
    train: list[FinetuneCase] = field(default_factory=list)
    validation: list[FinetuneCase] = field(default_factory=list)
    test: list[str] = field(default_factory=list)  # case ids of the split's test part
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"case", "part", "reason"}
    compare: dict[str, Any] = field(default_factory=dict)  # filled after the comparison
    # which values of the ORIGINAL labels are airway (nnU-Net dataset.json, e.g. "value:2"); None: nonzero.
    # Reviewed labels are 0/1 masks, so originals read with a selector are written as 0/1 masks for the run.
    label_selector: str | None = None
    # --ignore-unreviewed: reviewed training labels get the ignore value on the error regions nobody
    # judged (core.training.finetune_ignore); ``ignored`` records what each case left out
    ignore_unreviewed: bool = False
    ignored: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinetunePlan:
        plan = cls(str(data["dataset"]), str(data["labels"]), str(data["init"]))
        plan.train = [FinetuneCase(**c) for c in data.get("train", [])]
        plan.validation = [FinetuneCase(**c) for c in data.get("validation", [])]
        plan.test = [str(c) for c in data.get("test", [])]
        plan.skipped = [dict(s) for s in data.get("skipped", [])]
        plan.compare = dict(data.get("compare") or {})
        selector = data.get("label_selector")
        plan.label_selector = str(selector) if selector else None
        plan.ignore_unreviewed = bool(data.get("ignore_unreviewed", False))
        plan.ignored = [dict(i) for i in data.get("ignored", [])]
        return plan

    def skipped_text(self) -> str:
        return "; ".join(f"{s['case']} ({s['part']}: {s['reason']})" for s in self.skipped)


def _label_for(case: Any, version: str) -> tuple[Path | None, str]:
    """(label file, the version it is) of a core.dataset.DatasetCase under ``version``."""
    reviewed: Path | None = case.reviewed if case.reviewed is not None and Path(case.reviewed).is_file() else None
    original: Path | None = case.reference
    if version == "reviewed":
        return reviewed, "reviewed"
    if version == "original":
        return original, "original"
    return (reviewed, "reviewed") if reviewed is not None else (original, "original")


def _frozen_split(dataset: Any) -> dict[str, list[str]]:
    from core.dataset import read_state

    split = read_state(dataset).split
    if not split:
        raise InputError(
            f"The dataset {dataset.root} has no frozen train / validation / test split.",
            f"Freeze one first (airway dataset split {dataset.root} --seed 0); fine-tuning trains on its "
            "'train' part and never reads its 'test' part.",
        )
    return {str(k): [str(c) for c in v] for k, v in split.items()}


def plan_finetune(
    dataset_dir: str | Path, labels: str = "reviewed", init: str | Path = "", *, ignore_unreviewed: bool = False
) -> FinetunePlan:
    """The cases and labels a fine-tuning run uses; raises InputError when nothing is left to train on.
    ``ignore_unreviewed``: reviewed training labels leave the unjudged error regions out of the losses."""
    from core.dataset import open_dataset

    if labels not in LABEL_VERSIONS:
        raise ConfigError(f"--labels {labels} is not a label version.", f"Use one of {', '.join(LABEL_VERSIONS)}.")
    if ignore_unreviewed and labels == "original":
        raise ConfigError(
            "--ignore-unreviewed leaves the unjudged parts of REVIEWED labels out; --labels original has none.",
            "Use --labels reviewed or --labels best with it.",
        )
    ds = open_dataset(dataset_dir)
    split = _frozen_split(ds)
    by_id = {c.case_id: c for c in ds.cases}
    plan = FinetunePlan(str(Path(ds.root).resolve()), labels, str(init))
    plan.label_selector = ds.label_selector
    plan.ignore_unreviewed = ignore_unreviewed
    for part, version in (("train", labels), ("validation", "original" if labels == "original" else "best")):
        for cid in split.get(part, []):
            case = by_id.get(cid)
            if case is None:
                plan.skipped.append({"case": cid, "part": part, "reason": "no longer in the dataset"})
                continue
            label, used = _label_for(case, version)
            if case.image is None:
                plan.skipped.append({"case": cid, "part": part, "reason": "no CT image"})
            elif label is None:
                why = "not reviewed (no labelsReviewed file)" if version == "reviewed" else "no label"
                plan.skipped.append({"case": cid, "part": part, "reason": why})
            else:
                target = plan.train if part == "train" else plan.validation
                target.append(FinetuneCase(cid, str(Path(case.image).resolve()), str(Path(label).resolve()), used))
    plan.test = [cid for cid in split.get("test", []) if cid in by_id]
    if not plan.train:
        hint = (
            "Review some training cases first (their reviewed labels go to labelsReviewed/), or use --labels best."
            if labels == "reviewed"
            else "Check that the split's train cases have a CT and a label."
        )
        raise InputError(
            f"No case of the split's 'train' part has a {'reviewed ' if labels == 'reviewed' else ''}label to "
            f"train on ({len(split.get('train', []))} train case(s) in the split).",
            hint,
            path=ds.root,
        )
    return plan


def reviewed_train_cases(dataset_dir: str | Path) -> tuple[int, int]:
    """(training cases with a reviewed label, training cases) of a dataset's frozen split.

    Raises InputError when the dataset cannot be opened or has no frozen split."""
    from core.dataset import open_dataset

    ds = open_dataset(dataset_dir)
    split = _frozen_split(ds)
    train = set(split.get("train", []))
    reviewed = sum(1 for c in ds.cases if c.case_id in train and _label_for(c, "reviewed")[0] is not None)
    return reviewed, len(train)


def checkpoint_base(init: str | Path) -> dict[str, Any]:
    """Config values that come from the start checkpoint: the model, its preprocessing, its patch
    sampling and validation window (a model fine-tunes on what it was trained and validated on)."""
    from core.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(init)
    base: dict[str, Any] = {
        "model": {"architecture": ckpt.architecture, "arch_args": ckpt.arch_args, "init": str(Path(init).resolve())}
    }
    prep = ckpt.preprocessing or {}
    kept = {k: prep[k] for k in ("window", "scale", "crop", "margin") if k in prep}
    if kept:
        base["preprocessing"] = kept
    training = ckpt.header.get("training")
    if isinstance(training, dict) and isinstance(training.get("sampling"), dict):
        base["sampling"] = dict(training["sampling"])
    inference = ckpt.header.get("inference")
    if isinstance(inference, dict) and isinstance(inference.get("window"), int):
        window = int(inference["window"])
        step = inference.get("step")
        base["validation"] = {"window": window, "step": int(step) if isinstance(step, int) else window}
    return base


def finetune_config(
    plan: FinetunePlan, run_dir: str | Path, preset: str | None = "finetune", config: str | Path | None = None
) -> TrainConfig:
    """The run's configuration: preset <- start checkpoint <- ``config`` file; data = the run's cases.csv."""
    from core.training.config import load_config

    base = checkpoint_base(plan.init)
    data: dict[str, Any] = {"path": str(RunFiles.of(run_dir).cases_csv.resolve())}
    if plan.validation:
        data["val_cases"] = [c.case_id for c in plan.validation]
    else:
        data["val_fraction"] = 0.0  # no validation part: never carve one out of the train cases
    if plan.ignore_unreviewed:
        from core.training.finetune_ignore import IGNORE_VALUE

        data["ignore_value"] = IGNORE_VALUE
    cfg = load_config(config, preset, {"data": data}, base=base)
    return cfg


def write_run_files(plan: FinetunePlan, run_dir: str | Path, say: Say | None = None) -> None:
    """``RUN/cases.csv`` (train + validation, image,label), the run's own labels where the dataset's
    cannot be read as they are (label maps, ``--ignore-unreviewed``) and ``RUN/finetune.json``."""
    from core.outputs import atomic_write_text

    files = RunFiles.of(run_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    ignoring = _ignore_inputs(plan) if plan.ignore_unreviewed else {}
    plan.ignored = []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "label"])
    for c in plan.train + plan.validation:
        label = c.label
        if c.version == "original" and plan.label_selector:
            label = str(_binary_label(Path(c.label), plan.label_selector, files.root / "labels" / Path(c.label).name))
        elif c.case_id in ignoring and c in plan.train and c.version == "reviewed":
            from core.training.finetune_ignore import write_ignore_label

            predictions, statuses = ignoring[c.case_id]
            done = write_ignore_label(
                c.case_id, Path(c.label), predictions, statuses, files.root / "labels" / f"{c.case_id}.nii.gz"
            )
            plan.ignored.append(done.to_json())
            label = done.label
            if say is not None:
                say(
                    f"{c.case_id}: {done.regions - done.judged} of {done.regions} error regions unjudged, "
                    f"{done.ignored_voxels} voxels ignored"
                )
        w.writerow([c.image, label])
    atomic_write_text(files.cases_csv, buf.getvalue())
    save_plan(plan, run_dir)


def _ignore_inputs(plan: FinetunePlan) -> dict[str, tuple[dict[str, Path], dict[str, dict[str, str]]]]:
    """case -> (its predictions by model, the review statuses the state file keeps for them)."""
    from core.dataset import open_dataset, read_state

    ds = open_dataset(plan.dataset)
    state = read_state(ds)
    out: dict[str, tuple[dict[str, Path], dict[str, dict[str, str]]]] = {}
    for case in ds.cases:
        cs = state.cases.get(case.case_id)
        view = cs.view if cs is not None else {}
        statuses = view.get("statuses") if isinstance(view, dict) else None
        out[case.case_id] = (dict(case.predictions), dict(statuses) if isinstance(statuses, dict) else {})
    return out


def _binary_label(src: Path, selector: str, dst: Path) -> Path:
    """The airway of a label map (``selector``) as a 0/1 mask at ``dst``: one label rule for a run's
    original and reviewed labels alike."""
    from core.io import read_label, write_volume

    write_volume(read_label(src, selector), dst)
    return dst


def save_plan(plan: FinetunePlan, run_dir: str | Path) -> None:
    from core.outputs import atomic_write_text

    atomic_write_text(RunFiles.of(run_dir).finetune, json.dumps(plan.to_json(), indent=1))


def load_plan(run_dir: str | Path) -> FinetunePlan | None:
    """The fine-tuning plan of a run folder, or None for an ordinary training run."""
    path = RunFiles.of(run_dir).finetune
    if not path.is_file():
        return None
    try:
        return FinetunePlan.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is damaged ({exc}).", "Start the fine-tuning again in a new --out folder.") from None


# -- the comparison after training ---------------------------------------------------------------


def _link(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` without copying where the system allows (a test CT can be large)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    try:
        os.symlink(src, dst, target_is_directory=src.is_dir())
    except OSError:  # no symlinks (Windows without the privilege): copy
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def compare_inputs(plan: FinetunePlan, folder: Path) -> tuple[Path, Path, list[str]]:
    """(CT folder, reference folder, case ids) of the split's test part, as links named by the one
    naming rule (CASE_0000 image, CASE label) for ``airway compare``. References: the reviewed label
    where there is one, else the original."""
    from core.dataset import open_dataset
    from core.io import volume_suffix

    ds = open_dataset(plan.dataset)
    by_id = {c.case_id: c for c in ds.cases}
    cts, refs = folder / "cts", folder / "references"
    for f in (cts, refs):
        if f.exists():
            shutil.rmtree(f)
        f.mkdir(parents=True)
    used = []
    for cid in plan.test:
        case = by_id.get(cid)
        if case is None or case.image is None:
            continue
        label, _ = _label_for(case, "best")
        if label is None:
            continue
        image = Path(case.image)
        _link(image.resolve(), cts / f"{cid}_0000{volume_suffix(image) if image.is_file() else ''}")
        target = refs / f"{cid}{volume_suffix(label)}"
        if plan.label_selector and Path(label) != case.reviewed:
            _binary_label(Path(label), plan.label_selector, target)
        else:
            _link(Path(label).resolve(), target)
        used.append(cid)
    return cts, refs, used


def finetuned_checkpoint(run_dir: str | Path) -> Path | None:
    files = RunFiles.of(run_dir)
    for kind in ("best", "last"):
        p = files.checkpoint(kind)
        if p.is_file():
            return p
    return None


def compare_models(
    run_dir: str | Path, *, device: str = "auto", threads: int | None = None, say: Say | None = None
) -> Path:
    """``airway compare`` of the start model and the fine-tuned one on the split's test part into
    ``RUN/compare``; returns the report's path. Raises InputError when there is nothing to compare."""
    from core.cli import build_parser

    files = RunFiles.of(run_dir)
    plan = load_plan(run_dir)
    if plan is None:
        raise InputError(f"{files.root} is not a fine-tuning run (no {files.finetune.name}).")
    new = finetuned_checkpoint(run_dir)
    if new is None:
        raise InputError(f"{files.root} has no checkpoint to compare.", "Let the run finish first.")
    cts, refs, used = compare_inputs(plan, files.root / "compare_inputs")
    if not used:
        raise InputError(
            "The split's 'test' part has no case with a CT and a label to compare the models on.",
            "Freeze a split with test cases (airway dataset split DIR --seed N).",
        )
    argv = [
        "compare",
        "--reference",
        str(refs),
        "--cts",
        str(cts),
        "--models",
        f"{INIT_NAME}={plan.init}",
        f"{FINETUNED_NAME}={new}",
        "--out",
        str(files.compare),
        "--overwrite",
        "--no-snapshots",  # 3D snapshots need a renderer; the figures and tests are what this report is for
        "--quiet",
        "--device",
        device,
    ]
    if threads:
        argv += ["--threads", str(threads)]
    if say is not None:
        say(f"Comparing {INIT_NAME} and {FINETUNED_NAME} on {len(used)} test case(s): {', '.join(used)}")
    args = build_parser().parse_args(argv)
    code = int(args.func(args) or 0)
    report = files.compare_report
    if code != 0 or not report.is_file():
        raise InputError(f"The comparison wrote no report (exit {code}).", f"See {files.log} for its messages.")
    plan.compare = {
        "report": str(report),
        "models": {INIT_NAME: plan.init, FINETUNED_NAME: str(new)},
        "test_cases": used,
        "summary": read_summary(files.compare),
    }
    save_plan(plan, run_dir)
    return report


def read_summary(compare_dir: Path) -> dict[str, dict[str, float]]:
    """model -> {"n", "td", "bd", "dsc", "precision"} means from a comparison's summary.csv."""
    out: dict[str, dict[str, float]] = {}
    path = compare_dir / "summary.csv"
    if not path.is_file():
        return out
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            figures: dict[str, float] = {}
            for key in ("n", "td", "bd", "dsc", "precision"):
                raw = row.get(key if key == "n" else f"{key}_mean")
                try:
                    figures[key] = float(raw) if raw not in (None, "") else float("nan")
                except ValueError:
                    figures[key] = float("nan")
            out[str(row.get("model"))] = figures
    return out


def compare_hook(device: str = "auto", threads: int | None = None) -> Callable[[Trainer], None]:
    """The trainer's ``after_training``: compare the models and say where the report is, as events.

    A failed comparison is a warning: the fine-tuned model is there and can be compared by hand."""

    def hook(trainer: Trainer) -> None:
        def say(text: str) -> None:
            trainer.events.emit("info", message=text)

        try:
            report = compare_models(trainer.paths.root, device=device, threads=threads, say=say)
        except AirwayError as exc:
            trainer.events.emit(
                "warning",
                message=f"The comparison of the start and the fine-tuned model failed: {exc}",
                kind="compare",
            )
            return
        plan = load_plan(trainer.paths.root)
        summary = plan.compare.get("summary", {}) if plan is not None else {}
        figures = "; ".join(
            f"{m}: TD {v.get('td', float('nan')):.1f}%, BD {v.get('bd', float('nan')):.1f}%" for m, v in summary.items()
        )
        trainer.events.emit(
            "info",
            message=f"Comparison on the test cases{': ' + figures if figures else ''}. Report: {report}",
            kind="compare",
            report=str(report),
        )

    return hook
