"""report.html in a real browser (Debian's chromium, headless): every image decodes, no script
error, and the verdict (which model is best, and why) is on the first screen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import ndimage

from core.cli import main
from core.io import write_volume
from core.volume import LabelVolume

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "report_in_browser.py"

sys.path.insert(0, str(SCRIPT.parent))
from report_in_browser import find_chromium  # noqa: E402

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)


def _check(report: Path, shot: Path) -> tuple[int, dict]:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


@needs_chromium
@pytest.mark.slow
def test_report_renders_in_chromium_with_the_verdict_first(tmp_path):
    from core.phantom import make_phantom

    for d in ("ref", "eroded", "dilated"):
        (tmp_path / d).mkdir()
    for i in range(5):
        lab = make_phantom(40, seed=i, spacing=(1.5, 1.5, 1.8), vessels=False).label
        write_volume(lab, tmp_path / "ref" / f"c{i}.nii.gz")
        er = ndimage.binary_erosion(lab.array, iterations=1 + i % 2)
        write_volume(LabelVolume(er, lab.geometry), tmp_path / "eroded" / f"c{i}.nii.gz")
        write_volume(
            LabelVolume(ndimage.binary_dilation(lab.array), lab.geometry), tmp_path / "dilated" / f"c{i}.nii.gz"
        )
    out = tmp_path / "out"
    argv = ["compare", "--reference", str(tmp_path / "ref"), "--predictions", f"eroded={tmp_path / 'eroded'}"]
    assert main(argv + [f"dilated={tmp_path / 'dilated'}", "--out", str(out), "-q", "--no-snapshots"]) == 0
    shot = tmp_path / "report.png"
    rc, found = _check(out / "report.html", shot)
    assert rc == 0, found
    assert found["images"] >= 2 and found["broken"] == 0 and found["errors"] == []
    assert found["verdict"].startswith("Best: ") and "ATM'22 score" in found["verdict"]
    assert shot.read_bytes()[:4] == b"\x89PNG"

    # the check can fail: a broken image and a script error are caught
    bad = tmp_path / "bad.html"
    html = (out / "report.html").read_text(encoding="utf-8")
    bad.write_text(html.replace("</body>", "<img src='data:image/png;base64,AAAA'><script>nosuch();</script></body>"))
    rc, found = _check(bad, tmp_path / "bad.png")
    assert rc == 1 and found["broken"] == 1 and any("nosuch" in e for e in found["errors"])
