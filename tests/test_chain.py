"""Issue 24, "Done when": a researcher's day end to end, typed as commands, without renaming a file.

`airway phantom-dataset` -> `airway segment` (region growing, and the shipped model with
`--method model`) -> `airway compare` -> report.html (rendered in chromium when installed) ->
the Compare tab, whose figures equal `airway evaluate`'s for the same files.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report_in_browser import find_chromium  # noqa: E402

COLUMNS = ("td", "bd", "dsc", "precision", "sensitivity", "specificity", "atm_score", "n_branches", "n_detected")


def _airway(*argv: str) -> str:
    """One command as a user types it (`airway ...`), through the CLI entry; its stdout."""
    r = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"airway {' '.join(argv)}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_phantoms_segment_compare_report_and_tab(tmp_path, qtbot, capsys):
    data, rg, model, out = tmp_path / "data", tmp_path / "rg", tmp_path / "model", tmp_path / "cmp"
    _airway("phantom-dataset", "--n", "2", "--size", "96", "--out", str(data))
    images, labels = data / "imagesTr", data / "labelsTr"
    _airway("segment", "--method", "region-growing", "--input", str(images), "--output", str(rg), "-q")
    _airway("segment", "--method", "model", "--input", str(images), "--output", str(model), "-q")
    # nnU-Net names in, nnU-Net names out: the folders compare as they are
    # (beside each mask its record CASE.json, core.segmentation.batch)
    assert sorted(p.name for p in rg.glob("*.nii.gz")) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    assert sorted(p.name for p in model.glob("*.nii.gz")) == sorted(p.name for p in labels.iterdir())
    printed = _airway(
        "compare",
        "--reference",
        str(labels),
        "--predictions",
        f"region-growing={rg}",
        f"model={model}",
        "--out",
        str(out),
        "-q",
    )
    assert "region-growing" in printed and "model" in printed
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 and not (out / "failures.csv").read_text().strip().splitlines()[1:]
    assert all(r[c] not in ("", "nan") for r in rows for c in COLUMNS)

    # the same files through airway evaluate: the same numbers under the same names
    ev = tmp_path / "evaluate.json"
    _airway("evaluate", "--reference", str(labels), "--prediction", str(rg), str(model), "--json", str(ev))
    names = {"rg": "region-growing", "model": "model"}
    evaluated = {(c["case"], names[c["model"]]): c for c in json.loads(ev.read_text())["cases"]}
    assert set(evaluated) == {(r["case"], r["model"]) for r in rows}
    for r in rows:
        e = evaluated[(r["case"], r["model"])]
        for c in COLUMNS:
            assert float(r[c]) == pytest.approx(float(e[c]), abs=1e-9), (r["case"], r["model"], c)

    # report.html in a real browser
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "id='verdict'" in html and "Best: " in html
    if find_chromium() is not None:
        shot = tmp_path / "report.png"
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "report_in_browser.py"),
                str(out / "report.html"),
                "--screenshot",
                str(shot),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        found = json.loads(r.stdout.strip().splitlines()[-1])
        assert found["broken"] == 0 and found["errors"] == [] and found["images"] >= 2

    # the Compare tab opens the folder; its table shows evaluate's numbers
    from app.compare import CompareTab

    tab = CompareTab(with_3d=False)
    qtbot.addWidget(tab)
    tab.resize(1280, 800)
    tab.show()
    tab.open_folder(out)
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "phantom_000", timeout=30000)
    assert [p.case.active.name for p in tab.layout_view.panes] == ["region-growing", "model"]
    m = tab.metrics
    assert not m.stale and m.per_case.rowCount() == 4
    header = [m.per_case.horizontalHeaderItem(j).text() for j in range(m.per_case.columnCount())]
    for i in range(m.per_case.rowCount()):
        case, mod = m.per_case.item(i, 0).text(), m.per_case.item(i, 1).text()
        for c in ("td", "bd", "dsc", "precision"):
            assert float(m.per_case.item(i, header.index(c)).text()) == pytest.approx(
                evaluated[(case, mod)][c], abs=0.006
            )
    for r in tab.result.rows:
        for c in COLUMNS:
            assert r.metrics[c] == pytest.approx(evaluated[(r.case, r.model)][c], abs=1e-9)
