"""Render an `airway compare` report.html in a real browser (Debian's chromium, headless) and check it.

    python benchmarks/report_in_browser.py OUT/report.html [--screenshot report.png] [--size 1280,900]

Fails (exit 1) on a broken image (``naturalWidth == 0``), a script error (an ``error`` event in
the page or an "Uncaught" console line in chromium's log), or a verdict ("Best: ...") that is
not within the first screen. Prints one JSON line: images, broken, errors, verdict_bottom_px,
screen_px, verdict. The report is copied beside itself with a tiny probe script appended (the
probe writes its findings into ``document.title``, which ``--dump-dom`` shows); the report
itself is never changed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const v = document.getElementById('verdict');
  const r = v ? v.getBoundingClientRect() : null;
  document.title = 'PROBE ' + JSON.stringify({
    images: imgs.length, broken: broken, errors: window.__errors,
    verdict_bottom_px: r ? Math.round(r.bottom) : -1, screen_px: window.innerHeight,
    verdict: v ? v.innerText.slice(0, 400) : ''
  });
});
</script>
"""
# the probe goes first, so an error in any later script is caught
_HEAD = re.compile(r"<head[^>]*>", re.I)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout)


def check(report: Path, screenshot: Path | None = None, size: tuple[int, int] = (1280, 900)) -> dict:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    text = report.read_text(encoding="utf-8")
    m = _HEAD.search(text)
    probed = text[: m.end()] + PROBE + text[m.end() :] if m else PROBE + text
    with tempfile.TemporaryDirectory(prefix="report-probe-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(probed, encoding="utf-8")
        window = f"--window-size={size[0]},{size[1]}"
        dom = _chromium(browser, window, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            shot = _chromium(browser, window, f"--screenshot={screenshot.absolute()}", report.absolute().as_uri())
            if not screenshot.exists():
                raise RuntimeError(f"chromium wrote no screenshot: {shot.stderr[-500:]}")
    title = re.search(r"<title>PROBE (.*?)</title>", dom.stdout, re.S)
    if title is None:
        raise RuntimeError(f"the probe did not run: {dom.stderr[-800:]}")
    import html as _html

    found = json.loads(_html.unescape(title.group(1)))
    console = [line for line in dom.stderr.splitlines() if "Uncaught" in line or ":ERROR:CONSOLE" in line]
    found["errors"] = list(found["errors"]) + console
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--size", default="1280,900", help="window W,H in pixels")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.split(","))
    found = check(a.report, a.screenshot, (w, h))
    print(json.dumps(found))
    ok = (
        found["broken"] == 0
        and not found["errors"]
        and found["verdict"].startswith("Best:")
        and 0 < found["verdict_bottom_px"] <= found["screen_px"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
