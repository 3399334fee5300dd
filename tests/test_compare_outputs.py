"""Issue 27 (3, 5, 6): `airway compare` under the output policy, its outputs written as one set
(staged, locked, swapped in), and its cache keyed by the files' content, never by their dates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from core.cli import main
from core.io import write_volume
from core.volume import LabelVolume

ROOT = Path(__file__).resolve().parents[1]


def _label(seed: int) -> LabelVolume:
    from core.phantom import make_phantom

    return make_phantom(32, seed=seed, spacing=(1.5, 1.5, 1.8), vessels=False).label


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cmpout")
    for d in ("ref", "a", "b"):
        (root / d).mkdir()
    for i in range(2):
        lab = _label(i)
        write_volume(lab, root / "ref" / f"c{i}.nii.gz")
        write_volume(LabelVolume(ndimage.binary_erosion(lab.array), lab.geometry), root / "a" / f"c{i}.nii.gz")
        write_volume(LabelVolume(ndimage.binary_dilation(lab.array), lab.geometry), root / "b" / f"c{i}.nii.gz")
    return root


def _compare(data: Path, out: Path, *models: str, extra: tuple[str, ...] = ()) -> int:
    preds = [f"{m}={data / m}" for m in models]
    return main(
        [
            "compare",
            "--reference",
            str(data / "ref"),
            "--predictions",
            *preds,
            "--out",
            str(out),
            "-q",
            "--no-snapshots",
            *extra,
        ]
    )


@pytest.mark.slow
def test_another_comparison_into_the_same_out_is_refused_then_backed_up(data, tmp_path, capsys):
    """Why: a second run with other inputs exited 0 and replaced metrics.csv and report.html."""
    out = tmp_path / "out"
    assert _compare(data, out, "a") == 0
    first = (out / "metrics.csv").read_text()
    # the same comparison again: its own results are updated in place, no flag needed
    assert _compare(data, out, "a") == 0
    capsys.readouterr()
    # another comparison: refused, nothing touched
    assert _compare(data, out, "a", "b") == 2
    err = capsys.readouterr().err
    assert "another comparison" in err and "--overwrite" in err and "out.bak" in err
    assert (out / "metrics.csv").read_text() == first
    # with --overwrite: replaced, the first original kept as OUT.bak, and never replaced later
    assert _compare(data, out, "a", "b", extra=("--overwrite",)) == 0
    assert "kept in" in capsys.readouterr().err
    assert (tmp_path / "out.bak" / "metrics.csv").read_text() == first
    assert ",b," in (out / "metrics.csv").read_text()
    assert _compare(data, out, "b", extra=("--overwrite",)) == 0
    assert (tmp_path / "out.bak" / "metrics.csv").read_text() == first


def test_a_users_own_files_are_never_lost(data, tmp_path, capsys):
    """Why: with --overwrite a user's own report.html was replaced and no .bak kept."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    (out / "notes.txt").write_text("my notes")
    assert _compare(data, out, "a") == 2
    assert "holds other files" in capsys.readouterr().err
    assert _compare(data, out, "a", extra=("--overwrite",)) == 0
    assert (tmp_path / "mine.bak" / "report.html").read_text() == "my own report"
    assert (out / "notes.txt").read_text() == "my notes"  # not ours to move or drop
    assert "Airway model comparison" in (out / "report.html").read_text()


def test_an_input_is_never_the_output(data, capsys):
    assert _compare(data, data / "a", "a", extra=("--overwrite",)) == 2
    assert "is (or holds) an input" in capsys.readouterr().err
    assert sorted(p.name for p in (data / "a").iterdir()) == ["c0.nii.gz", "c1.nii.gz"]


def test_cache_is_keyed_by_content_not_size_and_date(data, tmp_path):
    """Why: a prediction replaced by another of the same size and mtime kept its old scores."""
    from core.compare import compare_folders

    pred = tmp_path / "p"
    pred.mkdir()
    lab0 = _label(0)
    good = lab0.array.astype(np.uint8)
    worse = ndimage.binary_erosion(lab0.array, iterations=2).astype(np.uint8)
    # uncompressed NIfTI: same shape, same dtype -> same size on disk
    write_volume(LabelVolume(good, lab0.geometry), pred / "c0.nii", compress=False)
    cache = tmp_path / "cache"
    first = compare_folders(data / "ref", {"p": pred}, cache_dir=cache)
    st = (pred / "c0.nii").stat()
    write_volume(LabelVolume(worse, lab0.geometry), pred / "c0.nii", compress=False)
    os.utime(pred / "c0.nii", ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = (pred / "c0.nii").stat()
    assert (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    again = compare_folders(data / "ref", {"p": pred}, cache_dir=cache)
    assert again.cache_stats.get("evaluated") == 1 and not again.row("c0", "p").cached
    assert again.row("c0", "p").metrics["dsc"] < first.row("c0", "p").metrics["dsc"]


def test_outputs_appear_together_or_not_at_all(data, tmp_path, monkeypatch, capsys):
    """Why: a failure after the CSVs left them without report.html."""
    import core.compare.report as report

    out = tmp_path / "set"
    assert _compare(data, out, "a") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def boom(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(report, "build_report", boom)
    assert _compare(data, out, "a", "b", extra=("--overwrite",)) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.")]  # no staging, no lock left


def _lock_of(out: Path) -> Path:
    return out.parent / f".{out.name}.compare.lock"


def test_a_second_run_into_the_same_folder_is_refused_and_a_stale_lock_taken_over(data, tmp_path, capsys):
    out = tmp_path / "locked"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        _lock_of(out).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "since": "now"}))
        assert _compare(data, out, "a") == 2
        err = capsys.readouterr().err
        assert f"pid {sleeper.pid}" in err and "is writing into" in err
        assert not out.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: the lock is stale, taken over with a note
    assert _compare(data, out, "a") == 0
    assert "took over a stale lock" in capsys.readouterr().err
    assert not _lock_of(out).exists() and (out / "report.html").exists()


@pytest.mark.slow
def test_kill_9_during_compare_leaves_the_old_set_or_none(data, tmp_path):
    """Why: kill -9 during compare left the CSVs and compare.json without report.html."""
    out = tmp_path / "k"
    argv = [
        sys.executable,
        "main.py",
        "compare",
        "--reference",
        str(data / "ref"),
        "--predictions",
        f"a={data / 'a'}",
        "--out",
        str(out),
        "-q",
        "--no-snapshots",
    ]
    assert subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv2 = argv[:6] + [f"b={data / 'b'}"] + argv[6:] + ["--overwrite", "--no-cache"]
    killed = 0
    for _attempt in range(3):  # kill it while it writes its staging folder
        proc = subprocess.Popen(argv2, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        staging = tmp_path / f".k.staging-{proc.pid}"
        t0 = time.monotonic()
        while proc.poll() is None and not (staging / "metrics.csv").exists() and time.monotonic() - t0 < 120:
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
            assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
            break
        proc.wait()
    assert killed, "the run always finished before it could be killed"
    # the next run clears the dead run's staging folder and its lock, and writes the new set
    r = subprocess.run(argv2, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "took over a stale lock" in r.stderr
    assert ",b," in (out / "metrics.csv").read_text() and (out / "report.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".k.")]


def test_results_of_an_earlier_version_are_not_replaced_silently(data, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "compare.json").write_text(json.dumps({"format_version": 1, "models": ["a"]}))
    (out / "metrics.csv").write_text("case,model,branches,detected\n")
    assert _compare(data, out, "a") == 2
    assert "earlier version" in capsys.readouterr().err
    assert _compare(data, out, "a", extra=("--overwrite",)) == 0
    assert (tmp_path / "old.bak" / "metrics.csv").read_text() == "case,model,branches,detected\n"


@pytest.mark.slow
def test_two_runs_into_one_out_at_once_leave_one_consistent_set(data, tmp_path):
    """Why: two runs into one --out at once left a report that disagreed with the CSVs, both exit 0."""
    out = tmp_path / "both"
    base = [sys.executable, "main.py", "compare", "--reference", str(data / "ref"), "--out", str(out), "-q"]
    runs = [
        subprocess.Popen(
            base + ["--predictions", f"{m}={data / m}", "--no-snapshots", "--no-cache"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in ("a", "b")
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in runs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "is writing into" in refused or "another comparison" in refused
    winner = json.loads((out / "compare.json").read_text())["models"]
    metrics = (out / "metrics.csv").read_text()
    html = (out / "report.html").read_text()
    assert len(winner) == 1 and f",{winner[0]}," in metrics and f"<b>Best: {winner[0]}</b>" in html
    other = {"a", "b"} - set(winner)
    assert f",{other.pop()}," not in metrics
