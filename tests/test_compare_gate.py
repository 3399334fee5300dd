"""`airway compare --models` applies the output gate (core.gate) as `airway segment` does, and says so
in stdout, compare.json, gate.csv, metrics.csv, report.html (a model failing everywhere flagged at
the top) and the Compare tab (issue 24: the gate was dropped and an all-zero model passed silently)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from core.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    from core.io import write_volume
    from core.phantom import make_phantom

    root = tmp_path_factory.mktemp("gatecmp")
    (root / "cts").mkdir()
    (root / "ref").mkdir()
    for i in range(2):
        ph = make_phantom((64, 64, 64), spacing=(1.5, 1.5, 2.0), seed=i)
        write_volume(ph.ct, root / "cts" / f"chest_{i}_0000.nii.gz")
        write_volume(ph.label, root / "ref" / f"chest_{i}.nii.gz")
    return root


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """An untrained tiny U-Net: what it returns is not an airway (one 64^3 window)."""
    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model
    from core.preprocess import Preprocessing

    torch.manual_seed(0)
    model = build_model("unet3d", base_channels=2, levels=2)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(
        path, model, {"preprocessing": Preprocessing(crop="none").to_dict(), "inference": {"window": 64, "step": 64}}
    )
    return path


@pytest.mark.slow
def test_compare_models_reports_the_gate_everywhere(cases, untrained, tmp_path, capsys, qtbot):
    from core.gate import check_mask
    from core.io import read_ct, read_label

    out = tmp_path / "out"
    argv = ["compare", "--reference", str(cases / "ref"), "--cts", str(cases / "cts"), "--models"]
    argv += [f"untrained={untrained}", "--out", str(out), "--device", "cpu", "--backend", "torch", "--no-snapshots"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "output gate" in captured.out and "passed 0 of 2" in captured.out
    assert "gate: chest_0 / untrained: failed:" in captured.out
    assert "untrained: every mask failed the output gate" in captured.err

    doc = json.loads((out / "compare.json").read_text())
    gate = doc["gate"]["untrained"]
    assert set(gate) == {"chest_0", "chest_1"}
    # the verdict is the one core.gate gives for the mask written (what airway segment applies)
    mask = read_label(out / "predictions" / "untrained" / "chest_0.nii.gz")
    direct = check_mask(read_ct(cases / "cts" / "chest_0_0000.nii.gz"), mask.mask)
    assert gate["chest_0"]["passed"] is direct.passed is False
    assert gate["chest_0"]["problems"] == direct.problems
    rows = list(csv.DictReader((out / "gate.csv").open()))
    assert {(r["case"], r["passed"]) for r in rows} == {("chest_0", "False"), ("chest_1", "False")}
    html = (out / "report.html").read_text()
    assert "id='gate-untrained'" in html and html.index("gate-untrained") < html.index("<h2>")
    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    assert all(r["gate"].startswith("failed: ") for r in metrics)

    # a rerun takes the masks and their gate verdicts from the cache
    assert main(argv + ["-q"]) == 0
    capsys.readouterr()
    again = json.loads((out / "compare.json").read_text())
    assert again["gate"] == doc["gate"] and again["cache_stats"].get("predictions_hits") == 2

    from app.compare import CompareTab

    tab = CompareTab(with_3d=False)
    qtbot.addWidget(tab)
    tab.open_folder(out)
    assert "untrained: every mask failed the output gate" in tab.metrics.banner.text()
