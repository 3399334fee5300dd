"""What the training tab launches, and the checks before it does; Qt-free.

Training always runs in a separate process that relaunches the application's
own entry point with the ``train`` subcommand, so the same code path works from
a source checkout (``python main.py train ...``) and from a frozen installer
build (``AirwayStudio train ...``), and a crash of the trainer never takes the
GUI with it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from app.training.runs import read_pid_file
from core.training.run_files import RunFiles

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class TrainSettings:
    """The tab's form. ``config`` is a preset name (``quick``) or the path of a TOML file."""

    data: str
    config: str
    out: str
    device: str = "auto"

    @property
    def is_preset(self) -> bool:
        return self.config in list_presets()


def list_presets() -> list[str]:
    """Names of the bundled training presets (``resources/configs/*.toml``)."""
    from core.resources import resources_root

    folder = resources_root() / "configs"
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def preset_description(name: str) -> str:
    """The leading comment of a bundled preset, as one paragraph (shown as its tooltip)."""
    from core.resources import resources_root

    path = resources_root() / "configs" / f"{name}.toml"
    lines = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    except OSError:
        return ""
    return " ".join(lines)


def entry_command(args: list[str]) -> tuple[str, list[str]]:
    """Program and arguments that run this application's own entry point with ``args``.

    Frozen (PyInstaller): the executable is the app itself. From source: the
    interpreter running us plus ``main.py`` of this checkout.
    """
    if getattr(sys, "frozen", False):
        return sys.executable, list(args)
    main_py = Path(__file__).resolve().parents[2] / "main.py"
    return sys.executable, [str(main_py), *args]


def train_args(settings: TrainSettings) -> list[str]:
    """Arguments of ``airway train`` for a new run."""
    args = ["train", "--data", str(Path(settings.data).expanduser())]
    if settings.is_preset:
        args += ["--preset", settings.config]
    else:
        args += ["--config", str(Path(settings.config).expanduser())]
    args += ["--out", str(Path(settings.out).expanduser())]
    if settings.device and settings.device != "auto":
        args += ["--device", settings.device]
    return args


def finetune_args(
    dataset: str | Path,
    init: str | Path,
    out: str | Path,
    device: str = "auto",
    config: str | Path | None = None,
    ignore_unreviewed: bool = False,
) -> list[str]:
    """Arguments of ``airway train`` that fine-tune ``init`` on a dataset's reviewed training cases;
    the trainer compares the start and the fine-tuned model on the split's test part when it ends.
    ``ignore_unreviewed``: the error regions the reviewer did not judge are left out of the losses."""
    args = ["train", "--dataset", str(Path(dataset).expanduser()), "--labels", "reviewed"]
    if ignore_unreviewed:
        args.append("--ignore-unreviewed")
    args += ["--init", str(Path(init).expanduser()), "--preset", "finetune"]
    if config:
        args += ["--config", str(Path(config).expanduser())]
    args += ["--out", str(Path(out).expanduser())]
    if device and device != "auto":
        args += ["--device", device]
    return args


def resume_args(run_dir: str | Path, device: str | None = None, more_epochs: int | None = None) -> list[str]:
    """Arguments of ``airway train`` that resume a run from its last checkpoint (config from RUN/config.toml);
    ``more_epochs``: train a (finished) run further by that many epochs of its last stage."""
    args = ["train", "--out", str(Path(run_dir)), "--resume"]
    if more_epochs is not None:
        args += ["--more-epochs", str(int(more_epochs))]
    if device and device != "auto":
        args += ["--device", device]
    return args


def check_settings(settings: TrainSettings) -> list[str]:
    """Everything wrong with the form, as messages that say how to fix it (empty: ready to start).

    Config values and the dataset layout are checked by the training engine's
    own code (``core.training.config``, ``core.training.dataset``), so the tab
    and ``airway train`` give the same messages.
    """
    from core.errors import AirwayError

    problems: list[str] = []
    data = settings.data.strip()
    if not data:
        problems.append("Choose a dataset folder (with imagesTr/ and labelsTr/, or a dataset.csv).")
    elif not Path(data).expanduser().exists():
        problems.append(f"The dataset folder {data} does not exist. Choose an existing folder.")
    else:
        try:
            from core.training.dataset import discover_cases

            cases = discover_cases(Path(data).expanduser())
            unlabelled = [c.name for c in cases if c.label is None]
            if len(unlabelled) == len(cases):
                problems.append(
                    f"No case in {data} has a label. Put the airway labels in labelsTr/ with the images' names."
                )
        except AirwayError as exc:
            problems.append(str(exc))

    config = settings.config.strip()
    if not config:
        problems.append("Choose a configuration preset or a .toml file.")
    elif config == "finetune":
        problems.append(
            "The finetune preset starts from a trained model on a reviewed dataset: open the dataset and use "
            "'Fine-tune on reviewed cases', or choose another preset to train from scratch."
        )
    else:
        try:
            from core.training.config import load_config

            if settings.is_preset:
                load_config(preset=config)
            else:
                path = Path(config).expanduser()
                if not path.is_file():
                    presets = ", ".join(list_presets()) or "none found"
                    problems.append(
                        f"The configuration file {config} does not exist. Choose a file or a preset ({presets})."
                    )
                else:
                    load_config(path=path)
        except AirwayError as exc:
            problems.append(str(exc))

    out = settings.out.strip()
    if not out:
        problems.append("Choose an output folder for the run.")
    else:
        run = Path(out).expanduser()
        record = read_pid_file(run) if run.is_dir() else None
        if run.exists() and not run.is_dir():
            problems.append(f"The output {out} is a file. Choose a folder.")
        elif record is not None and record.alive():
            # the trainer writes events.jsonl only after it has started up
            problems.append(
                f"A training process (pid {record.pid}) is already running in {out}. "
                "Wait for it, stop it, or choose another folder."
            )
        elif RunFiles.of(run).events.exists() or RunFiles.of(run).config.exists():
            problems.append(f"The output folder {out} already holds a run. Resume it, or choose a new folder.")
        else:
            parent = next((p for p in [run, *run.parents] if p.exists()), None)
            if parent is None or not parent.is_dir():
                problems.append(f"The output folder {out} cannot be created. Choose a folder on an existing drive.")
            elif not _writable(parent):
                problems.append(f"The folder {parent} is not writable. Choose an output folder you can write to.")

    if not DEVICE_PATTERN.match(settings.device.strip() or "auto"):
        problems.append(f"Device '{settings.device}' is not known. Use auto, cpu, cuda or cuda:N.")
    return problems


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


def launch_detached(program: str, arguments: list[str], cwd: str | Path, log_path: str | Path) -> int | str:
    """Start the trainer in its own session, its output appended to ``log_path``; its pid, or why it failed.

    The pid comes from the start itself, before this returns, so the tab writes
    its pid record at once and a window closed right after Start can still
    reattach to and kill the trainer. (``QProcess.startDetached()`` in PySide6
    drops the pid; finding it again by command line lost trainers that had
    already exited, or that were listed late on a loaded machine.)
    The new session keeps the trainer alive when the window closes.
    """
    import os
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Windows: a detached process in its own group; elsewhere: its own session
    if sys.platform == "win32":
        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        flags = 0
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [program, *arguments],
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                creationflags=flags,
                start_new_session=sys.platform != "win32",
            )
    except OSError as exc:
        return exc.strerror or str(exc)
    return int(proc.pid)
