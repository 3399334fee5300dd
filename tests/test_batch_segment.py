"""Issue 25 part 2: ``airway segment --input-dir IN --output-dir OUT`` as a user types it.

Each test runs the command line (``python main.py segment ...``) on a folder of tiny phantoms: the outputs
are named as ``airway compare`` matches them, every case has a complete record, ``--continue`` skips what
is unchanged and redoes what changed, parts split the cases, a broken file fails only its case, and a
worker killed with SIGKILL fails the case in flight while the run goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"
#: the demo model's training grid (resources/models/demo_wingsnet.json): 48^3 phantoms at 2.5 x 2.5 x 3 mm
SIZE, SPACING = 48, (2.5, 2.5, 3.0)
RECORD_KEYS = {
    "case",
    "input",
    "method",
    "model",
    "code",
    "device",
    "engine",
    "seconds",
    "gate",
    "warnings",
    "options",
    "mask_options",
}

needs_demo = pytest.mark.skipif(not DEMO.exists(), reason="the demo model resources/models/demo_wingsnet.pt is absent")


def airway(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """One command as typed (`airway ...` through main.py), stdout and stderr captured."""
    return subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six phantoms (images CASE_0000.nii.gz, labels CASE.nii.gz) made once for the module."""
    from core.io import write_volume
    from core.phantom import make_phantom

    root = tmp_path_factory.mktemp("phantoms")
    for i in range(6):
        p = make_phantom(SIZE, spacing=SPACING, seed=i)
        write_volume(p.ct, root / "images" / f"ph{i:03d}_0000.nii.gz")
        write_volume(p.label, root / "labels" / f"ph{i:03d}.nii.gz")
    return root


def cases(phantom_files: Path, tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A fresh folder of ``n`` images and one of their labels."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(n):
        shutil.copy(phantom_files / "images" / f"ph{i:03d}_0000.nii.gz", images)
        shutil.copy(phantom_files / "labels" / f"ph{i:03d}.nii.gz", labels)
    return images, labels


def model_args() -> list[str]:
    return ["--model", str(DEMO), "--device", "cpu", "--backend", "torch"]


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


# -- splitting -----------------------------------------------------------------------------------------


def test_parts_split_round_robin_disjoint_and_complete():
    from core.segmentation.batch import batch_cases

    images = [(f"c{i:02d}", Path(f"c{i:02d}.nii.gz")) for i in range(11)]
    shuffled = images[5:] + images[:5]  # the split follows the sorted names, not the listing order
    for k in range(1, 5):
        parts = [batch_cases(shuffled, k, i) for i in range(k)]
        names = [n for part in parts for n, _ in part]
        assert sorted(names) == [n for n, _ in images] and len(set(names)) == len(names)
        assert parts[0][:2] == [images[0], images[k]]
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.slow
def test_part_id_out_of_range_is_refused(tmp_path):
    from core.io import write_volume
    from core.phantom import make_phantom

    write_volume(make_phantom(SIZE, spacing=SPACING, seed=0).ct, tmp_path / "in" / "a_0000.nii.gz")
    r = airway("segment", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
               "--num-parts", "4", "--part-id", "4")  # fmt: skip
    assert r.returncode == 2
    assert "--part-id 4 is out of range for --num-parts 4" in r.stderr and "0 to 3" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_folder_options_on_one_ct_are_refused(tmp_path):
    from core.io import write_volume
    from core.phantom import make_phantom

    ct = tmp_path / "a_0000.nii.gz"
    write_volume(make_phantom(SIZE, spacing=SPACING, seed=0).ct, ct)
    r = airway("segment", "-i", str(ct), "-o", str(tmp_path / "m.nii.gz"), "--continue", "--num-parts", "2")
    assert r.returncode == 2 and "--continue, --num-parts only apply to a folder of cases" in r.stderr
    r = airway("segment", "--input-dir", str(ct), "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "not a folder of cases" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_0000.nii.gz"]


# -- a folder, end to end ------------------------------------------------------------------------------


@pytest.mark.slow
@needs_demo
def test_folder_writes_case_masks_and_complete_records_that_compare_matches(phantom_files, tmp_path):
    from core.io import read_ct, read_label
    from core.outputs import content_key
    from core.segmentation.batch_record import file_checksum

    images, labels = cases(phantom_files, tmp_path, 3)
    out = tmp_path / "out"
    r = airway("segment", "--input-dir", str(images), "--output-dir", str(out), *model_args())
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ph000.nii.gz", "ph001.nii.gz", "ph002.nii.gz"]
    assert "done 3, skipped 0, failed 0" in r.stderr
    # not a terminal: one plain line per case with the rate, no carriage-return redraws
    assert "cases/min" in r.stderr and "\r" not in r.stderr
    checksum = file_checksum(DEMO)
    for case, rec in records(out).items():
        assert RECORD_KEYS <= set(rec), set(rec) ^ RECORD_KEYS
        assert rec["case"] == case and rec["method"] == "model"
        assert rec["model"]["checksum"] == checksum and rec["model"]["name"] == "demo_wingsnet.pt"
        assert rec["model"]["card"].startswith("synthetic")
        assert rec["input"]["content_key"] == content_key(read_ct(images / f"{case}_0000.nii.gz"))
        assert rec["code"]["airway_studio"] and rec["device"] == "cpu" and rec["engine"].startswith("torch")
        assert rec["gate"]["passed"] is True and rec["seconds"] > 0
        assert rec["options"]["predict"]["backend"] == "torch"
        assert read_label(out / f"{case}.nii.gz").mask.any()

    cmp = tmp_path / "cmp"
    r = airway("compare", "--reference", str(labels), "--predictions", f"demo={out}", "--out", str(cmp), "-q")
    assert r.returncode == 0, r.stderr
    rows = (cmp / "metrics.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == 3  # every case matched by name; the records beside the masks are not predictions

    # the same folder through the old form --input/--output (one route) and without overlap: same masks
    seq = tmp_path / "seq"
    r = airway("segment", "-i", str(images), "-o", str(seq), *model_args(), "--loaders", "0", "--exporters", "0")
    assert r.returncode == 0, r.stderr
    for case in records(out):
        assert (read_label(seq / f"{case}.nii.gz").array == read_label(out / f"{case}.nii.gz").array).all()


@pytest.mark.slow
@needs_demo
def test_continue_skips_unchanged_cases_and_redoes_a_changed_one(phantom_files, tmp_path):
    from core.io import read_ct, write_volume
    from core.phantom import make_phantom

    images, _ = cases(phantom_files, tmp_path, 3)
    out = tmp_path / "out"
    args = ["segment", "--input-dir", str(images), "--output-dir", str(out), *model_args()]
    assert airway(*args).returncode == 0
    before = records(out)

    # without --continue an existing output is refused, as for every command
    r = airway(*args)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "Choose another --output-dir" in r.stderr

    # one input changes its voxels; another is converted to MetaImage: other bytes, the same voxels and grid
    write_volume(make_phantom(SIZE, spacing=SPACING, seed=40).ct, images / "ph001_0000.nii.gz")
    same = read_ct(images / "ph002_0000.nii.gz")
    (images / "ph002_0000.nii.gz").unlink()
    write_volume(same, images / "ph002_0000.mha")
    r = airway(*args, "--continue")
    assert r.returncode == 0, r.stderr
    assert "done 1, skipped 2, failed 0" in r.stderr
    after = records(out)
    assert after["ph000"] == before["ph000"]  # untouched
    assert after["ph001"]["input"]["content_key"] != before["ph001"]["input"]["content_key"]
    assert after["ph002"]["input"]["content_key"] == before["ph002"]["input"]["content_key"]
    assert (out / "ph001.nii.gz.bak").exists()  # the replaced mask's first original is kept
    assert after["ph001"]["redone"] == "the input changed" and "segmented again: the input changed" in r.stdout

    # another model (checksum) redoes every case
    other = tmp_path / "other.pt"
    shutil.copy(DEMO, other)
    with other.open("ab") as f:
        f.write(b"\0")  # other bytes, same weights: a different checksum
    r = airway("segment", "--input-dir", str(images), "--output-dir", str(out), "--model", str(other),
               "--device", "cpu", "--backend", "torch", "--continue")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "done 3, skipped 0, failed 0" in r.stderr
    assert all(rec["redone"] == "another model or options" for rec in records(out).values())


@pytest.mark.slow
@needs_demo
def test_two_parts_side_by_side_are_disjoint_and_cover_all(phantom_files, tmp_path):
    images, _ = cases(phantom_files, tmp_path, 5)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "main.py",
                "segment",
                "--input-dir",
                str(images),
                "--output-dir",
                str(out),
                *model_args(),
                "--num-parts",
                "2",
                "--part-id",
                str(i),
                "-q",
                # part 1 with two loader and two exporter threads: several of each share the queues
                "--loaders",
                str(i + 1),
                "--exporters",
                str(i + 1),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    recs = records(out)
    assert sorted(recs) == [f"ph{i:03d}" for i in range(5)]
    by_part = {i: sorted(c for c, r in recs.items() if r["part"]["part_id"] == i) for i in range(2)}
    assert by_part == {0: ["ph000", "ph002", "ph004"], 1: ["ph001", "ph003"]}
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"ph{i:03d}.nii.gz" for i in range(5)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staged leftovers


@pytest.mark.slow
def test_a_broken_input_fails_only_its_case(phantom_files, tmp_path):
    images, _ = cases(phantom_files, tmp_path, 2)
    (images / "broken_0000.nii.gz").write_bytes(b"this is not a NIfTI file")
    out = tmp_path / "out"
    r = airway("segment", "--input-dir", str(images), "--output-dir", str(out), "--method", "region-growing")
    assert r.returncode == 1, r.stderr
    assert "done 2, skipped 0, failed 1" in r.stderr
    summary = r.stderr[r.stderr.index("done 2, skipped 0, failed 1") :]
    assert "failed: broken: " in summary and "not recognized as a NIFTI" in summary
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ph000.nii.gz", "ph001.nii.gz"]
    assert sorted(records(out)) == ["ph000", "ph001"] and not (out / "broken.json").exists()


@pytest.mark.slow
def test_a_killed_worker_fails_the_case_in_flight_and_the_run_goes_on(phantom_files, tmp_path):
    """SIGKILL the inference worker while it segments the middle case: that case fails with the signal,
    a fresh worker segments the last one, the run ends with exit 1 in bounded time."""
    from core.io import write_volume
    from core.phantom import make_phantom

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(phantom_files / "images" / "ph000_0000.nii.gz", images / "a_0000.nii.gz")
    # the middle case is big enough (region growing takes seconds) to be in flight when it is killed
    write_volume(make_phantom(128, seed=3).ct, images / "b_0000.nii.gz")
    shutil.copy(phantom_files / "images" / "ph001_0000.nii.gz", images / "c_0000.nii.gz")
    out, status = tmp_path / "out", tmp_path / "status.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "main.py",
            "segment",
            "--input-dir",
            str(images),
            "--output-dir",
            str(out),
            "--method",
            "region-growing",
            "--status",
            str(status),
        ],  # fmt: skip
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        state: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                state = json.loads(status.read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("in_flight") == "b" and state.get("worker_pid"):
                break
            time.sleep(0.02)  # polling the status file, not waiting a fixed time
        assert state.get("in_flight") == "b", (state, proc.poll())
        os.kill(state["worker_pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "done 2, skipped 0, failed 1" in err
    assert "failed: b: worker killed (signal 9)" in err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz"]
    final = json.loads(status.read_text())
    assert final["worker_starts"] == 2 and final["failed"] == 1 and final["done"] == 2


@pytest.mark.slow
def test_cancel_stops_the_run_ends_its_worker_and_leaves_no_partial_file(phantom_files, tmp_path):
    """run_batch as the app would call it: cancelled once the first case is written."""
    import multiprocessing

    from core.errors import Cancelled
    from core.progress import CancelToken
    from core.segmentation.batch import BatchOptions, SegmentOptions, run_batch

    images, _ = cases(phantom_files, tmp_path, 4)
    out = tmp_path / "out"
    cancel = CancelToken()
    ended = []

    def on_case(record):
        ended.append(record)
        cancel.set()

    with pytest.raises(Cancelled):
        run_batch(images, out, BatchOptions(), SegmentOptions(method="region-growing"), cancel=cancel, on_case=on_case)
    # the case in flight when the token was set may still have been written; the others never started
    assert 1 <= len(ended) <= 2 and all(r.status == "done" for r in ended)
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(r.case_id for r in ended)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not multiprocessing.active_children()


@pytest.mark.slow
def test_a_gate_failure_is_a_warning_in_the_record_and_with_strict_fails_the_case(phantom_files, tmp_path):
    """An untrained network's mask does not look like an airway: recorded as the gate's verdict, or under
    --strict a failed case with nothing written for it."""
    import torch

    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model
    from core.preprocess import Preprocessing

    torch.manual_seed(0)
    ckpt = tmp_path / "untrained.pt"
    save_checkpoint(
        ckpt,
        build_model("unet3d", base_channels=2, levels=2),
        {"preprocessing": Preprocessing(crop="none").to_dict(), "inference": {"window": 64, "step": 64}},
    )
    images, _ = cases(phantom_files, tmp_path, 3)
    common = ["segment", "--input-dir", str(images), "--model", str(ckpt), "--device", "cpu", "--backend", "torch"]
    r = airway(*common, "--output-dir", str(tmp_path / "warn"))
    assert r.returncode == 0, r.stderr
    warned = records(tmp_path / "warn")
    failing = sorted(c for c, rec in warned.items() if not rec["gate"]["passed"])
    assert failing, "the untrained network passed the gate on every phantom"
    for case in failing:
        assert any("does not look like the CT's airway" in w for w in warned[case]["warnings"])
    strict = tmp_path / "strict"
    r = airway(*common, "--output-dir", str(strict), "--strict")
    assert r.returncode == 1
    assert f"failed {len(failing)}" in r.stderr
    for case in warned:
        assert (f"failed: {case}: " in r.stderr) == (case in failing)
        assert (strict / f"{case}.nii.gz").exists() == (strict / f"{case}.json").exists() == (case not in failing)
