"""Structure of .github/workflows/installers.yml and the scripts it calls (the jobs themselves
run on GitHub: tens of minutes and GBs; their Linux steps were run by hand, see installer/README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml  # a test extra (pyproject.toml)

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "installers.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def run_text(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(job: dict) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


def test_two_jobs_on_the_asked_runners(workflow):
    assert workflow["jobs"]["linux"]["runs-on"] == "ubuntu-22.04"
    assert workflow["jobs"]["windows"]["runs-on"] == "windows-latest"
    # PyYAML reads the bare key `on` as True
    triggers = workflow.get("on", workflow.get(True))
    assert "workflow_dispatch" in triggers and "pull_request" in triggers


def test_each_job_builds_smoke_tests_and_uploads(workflow):
    linux, windows = workflow["jobs"]["linux"], workflow["jobs"]["windows"]
    assert "bash installer/build_linux.sh" in run_text(linux)
    assert ".\\installer\\build_windows.ps1" in run_text(windows)
    for job, exe in ((linux, "dist/AirwayStudio/AirwayStudio"), (windows, "dist/AirwayStudio/AirwayStudio.exe")):
        assert f"python installer/smoke_test.py --app {exe}" in run_text(job)
        assert any(u.startswith("actions/checkout@") for u in uses(job))
        py = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
        assert py["with"]["python-version"] == "3.11"
        upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
        assert upload["with"]["if-no-files-found"] == "error"
    assert "installer/linux/test_deb.sh" in run_text(linux)
    linux_art = next(s for s in linux["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert ".deb" in linux_art["with"]["path"] and ".tar.gz" in linux_art["with"]["path"]
    win_art = next(s for s in windows["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "-setup.exe" in win_art["with"]["path"]


def test_smoke_runs_after_the_build(workflow):
    for job in workflow["jobs"].values():
        runs = [s.get("run", "") for s in job["steps"]]
        build = next(i for i, r in enumerate(runs) if "build_" in r)
        smoke = next(i for i, r in enumerate(runs) if "smoke_test.py" in r)
        assert build < smoke


def test_scripts_the_workflow_names_exist():
    text = WORKFLOW.read_text(encoding="utf-8")
    for rel in set(re.findall(r"installer[/\\][\w/\\.]+\.(?:sh|ps1|py)", text)):
        assert (ROOT / rel.replace("\\", "/")).is_file(), rel


def test_windows_build_checks_native_exit_codes_and_installs_the_default_engine():
    ps1 = (ROOT / "installer" / "build_windows.ps1").read_text(encoding="utf-8")
    # $ErrorActionPreference = "Stop" ignores a failing pip/pyinstaller/iscc: each goes through Invoke-Checked
    calls = [
        ln.strip()
        for ln in ps1.splitlines()
        if re.search(r"pip install|pyinstaller\.exe|\$iscc\s+\"/D", ln) and not ln.strip().startswith("#")
    ]
    assert len(calls) >= 4
    assert all(ln.startswith("Invoke-Checked ") for ln in calls), calls
    assert '".[fast-cpu]"' in ps1  # ONNX Runtime, the CPU default


def test_inno_script_installs_the_bundle_with_both_executables():
    iss = (ROOT / "installer" / "windows" / "airway_studio.iss").read_text(encoding="utf-8")
    assert re.search(r"^AppId=\{\{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}$", iss, re.M)
    assert 'Source: "..\\..\\dist\\AirwayStudio\\*"' in iss and "recursesubdirs" in iss
    assert "OutputBaseFilename=AirwayStudio-{#AppVersion}-setup" in iss
    spec = (ROOT / "installer" / "airway_studio.spec").read_text(encoding="utf-8")
    assert 'name="airway"' in spec  # the console CLI twin the smoke test uses on Windows
