"""Issue 25's "Done when": a 20-case phantom dataset goes through the whole loop.

open (core.dataset) -> batch-segment in 2 parts run as two processes, one of them losing its
inference worker to SIGKILL (the case fails, the run goes on; ``--continue`` segments it later) ->
review some training cases through the headless review session (statuses survive reopening the
dataset and a second handle on it) -> ``airway train --dataset --labels reviewed --init
--preset finetune`` -> the start and the fine-tuned model compared on the split's test part ->
the comparison report names both models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"
SIZE, SPACING = 48, (2.5, 2.5, 3.0)
BIG = "phantom_009"  # a larger CT, so that it is surely in flight when its worker is killed (part 1: 9 % 2)
MODEL = "demo_wingsnet"  # the prediction folder inside the dataset: one model per folder


def airway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def segment_cmd(images: Path, out: Path, part: int, *extra: str) -> list[str]:
    return [
        sys.executable, "main.py", "segment", "--input-dir", str(images), "--output-dir", str(out),
        "--model", str(DEMO), "--num-parts", "2", "--part-id", str(part), "--device", "cpu", "--threads", "1",
        *extra,
    ]  # fmt: skip


def kill_worker_on(proc: subprocess.Popen[str], status: Path, case: str, timeout_s: float = 300) -> None:
    """SIGKILL the batch's inference worker while it segments ``case`` (read from its --status file)."""
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            state = json.loads(status.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("in_flight") == case and state.get("worker_pid"):
            os.kill(int(state["worker_pid"]), signal.SIGKILL)
            return
        time.sleep(0.02)  # polling the status file for a condition, not waiting a fixed time
    raise AssertionError(f"{case} was never seen in flight: {state}, exit {proc.poll()}")


@pytest.mark.slow
def test_twenty_case_dataset_through_the_whole_loop(tmp_path):
    from test_finetune import TINY_TOML

    from core.dataset import freeze_split, open_dataset, read_state, set_case
    from core.io import write_volume
    from core.training.finetune_phantoms import noisy_phantom, review_with_truth, write_noisy_phantom_dataset

    # -- a 20-case dataset whose references miss distal branches; open it, freeze a split ------------
    data, truth = tmp_path / "dataset", tmp_path / "truth"
    names = write_noisy_phantom_dataset(data, range(5000, 5020), truth, size=SIZE, spacing=SPACING, omit_distal=6)
    big = noisy_phantom(5009, 128, SPACING, 6)
    write_volume(big.ct, data / "imagesTr" / f"{BIG}_0000.nii.gz")
    write_volume(big.label, data / "labelsTr" / f"{BIG}.nii.gz")
    write_volume(big.full_label, truth / f"{BIG}.nii.gz")
    ds = open_dataset(data)
    assert ds.layout == "nnunet" and [c.case_id for c in ds.cases] == names and len(names) == 20
    split = freeze_split(ds, seed=0)
    assert sorted(len(v) for v in split.values()) == [3, 3, 14]

    # -- batch segmentation: 2 parts side by side, a worker of part 1 killed on the big case ----------
    preds = data / MODEL
    status = tmp_path / "part1.status.json"
    p0 = subprocess.Popen(segment_cmd(data / "imagesTr", preds, 0), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    p1 = subprocess.Popen(segment_cmd(data / "imagesTr", preds, 1, "--status", str(status)), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        kill_worker_on(p1, status, BIG)
        _, err1 = p1.communicate(timeout=600)
        _, err0 = p0.communicate(timeout=600)
    finally:
        for p in (p0, p1):
            if p.poll() is None:
                p.kill()
    assert p0.returncode == 0, err0
    assert p1.returncode == 1, err1
    assert f"failed: {BIG}: worker killed" in err1
    done = sorted(p.name.removesuffix(".nii.gz") for p in preds.glob("*.nii.gz"))
    assert done == [n for n in names if n != BIG]
    # the failed case is segmented by a --continue of its part; the others are skipped
    again = airway(*segment_cmd(data / "imagesTr", preds, 1, "--continue")[2:])
    assert again.returncode == 0, again.stderr
    assert "done 1, skipped 9, failed 0" in again.stderr
    ds = open_dataset(data)
    assert all(MODEL in c.predictions for c in ds.cases)

    # -- review some training cases (the scripted annotator accepts FP regions the truth confirms) ----
    to_review = [c for c in split["train"] if c != BIG][:5]
    efforts = [review_with_truth(ds, c, ds.case(c).predictions[MODEL], truth / f"{c}.nii.gz") for c in to_review]
    assert sum(e.fp_regions for e in efforts) > 0
    flagged = split["train"][-1]
    # a second window on the same dataset changes another case meanwhile: neither change is lost
    other_window = open_dataset(data)
    set_case(other_window, flagged, status="flagged", note="looks odd", reviewer="second")
    reopened = read_state(open_dataset(data))  # a restart: everything read back from the dataset file
    for c in to_review:
        assert reopened.cases[c].status == "done"
        assert (data / "labelsReviewed" / f"{c}.nii.gz").is_file()
    assert reopened.cases[flagged].status == "flagged" and reopened.cases[flagged].note == "looks odd"
    assert reopened.split == split

    # -- fine-tune on the reviewed cases, then the comparison runs by itself -------------------------
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(TINY_TOML)
    run = tmp_path / "run"
    r = airway("train", "--dataset", str(data), "--labels", "reviewed", "--init", str(DEMO), "--preset",
               "finetune", "--config", str(tiny), "--out", str(run))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads((run / "finetune.json").read_text())
    assert sorted(c["case_id"] for c in plan["train"]) == sorted(to_review)
    assert {s["case"] for s in plan["skipped"]} == set(split["train"]) - set(to_review)
    assert plan["compare"]["test_cases"] == split["test"]
    report = run / "compare" / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "init" in html and "finetuned" in html
    assert all(c in html for c in split["test"])
    summary = plan["compare"]["summary"]
    assert set(summary) == {"init", "finetuned"} and all(v["n"] == 3 for v in summary.values())

    # -- the dataset summary reports the review -------------------------------------------------------
    s = airway("dataset", "summary", str(data), "--json")
    assert s.returncode == 0, s.stderr
    figures = json.loads(s.stdout)
    assert figures["cases"] == 20 and figures["counts"]["done"] == len(to_review)
    statuses = {row["case"]: row["status"] for row in figures["rows"]}
    assert all(statuses[c] == "done" for c in to_review) and statuses[flagged] == "flagged"
