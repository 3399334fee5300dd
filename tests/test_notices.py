"""THIRD_PARTY_NOTICES generator (installer/make_notices.py) and its place in About.

The frozen build itself is not run here (minutes, GBs): installer/smoke_test.py does that.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "installer"))
import make_notices  # noqa: E402


@pytest.fixture(scope="module")
def notices() -> dict[str, make_notices.Notice]:
    dists = make_notices.requirement_closure(make_notices.project_requirements())
    return {n.name.lower(): n for n in make_notices.build_notices(dists)}


def test_closure_covers_the_runtime_requirements_and_their_dependencies(notices):
    for direct in (
        "torch",
        "numpy",
        "simpleitk",
        "pyside6_essentials",
        "vtk",
        "edt",
        "connected-components-3d",
        "onnxruntime",
    ):
        assert direct in notices, direct
    # reached only through other packages' Requires-Dist: shiboken6 (PySide6), pooch (pyvista)
    assert "shiboken6" in notices and "pooch" in notices
    assert "python" in notices
    # not a dependency of the app (the test runner), nor the app itself
    assert "pytest" not in notices and "airway-studio" not in notices
    # OpenVINO is an optional engine the bundle leaves out; nibabel/pydicom only write the tests' files
    assert "openvino" not in notices and "nibabel" not in notices and "pydicom" not in notices


def test_each_entry_has_version_licence_and_text(notices):
    for n in notices.values():
        assert n.version and n.licence
        assert n.texts, f"{n.name} has no licence text"
    assert notices["torch"].version == metadata.version("torch")
    assert "BSD-3-Clause" in notices["torch"].licence
    # wheel ships its own COPYING.LESSER
    assert any("COPYING.LESSER" in name for name, _ in notices["connected-components-3d"].texts)


def test_lgpl_wheels_without_licence_files_get_the_declared_standard_text(notices):
    edt = notices["edt"]
    assert edt.licence == "LGPL-3.0-or-later"
    names = [name for name, _ in edt.texts]
    assert names[0].startswith("LGPL-3.0.txt") and names[1].startswith("GPL-3.0.txt")
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in edt.texts[0][1]
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in notices["pyside6_essentials"].texts[0][1]


def test_licence_comes_from_expression_then_short_field_then_classifier():
    class Fake(metadata.Distribution):
        def __init__(self, headers: dict):
            self.headers = headers

        def read_text(self, filename):
            if filename == "METADATA":
                return "".join(
                    f"{k}: {v}\n"
                    for k, vals in self.headers.items()
                    for v in (vals if isinstance(vals, list) else [vals])
                )
            return None

        def locate_file(self, path):
            return Path(path)

    assert make_notices.licence_of(Fake({"Name": "a", "License-Expression": "MIT", "License": "BSD"})) == "MIT"
    assert make_notices.licence_of(Fake({"Name": "a", "License": "LGPL-3.0-or-later"})) == "LGPL-3.0-or-later"
    cls = {"Name": "a", "License": "UNKNOWN", "Classifier": ["License :: OSI Approved :: Apache Software License"]}
    assert make_notices.licence_of(Fake(cls)) == "Apache-2.0"
    assert "not declared" in make_notices.licence_of(Fake({"Name": "a"}))


def test_written_file_lists_a_summary_then_the_texts(tmp_path):
    dists = [metadata.distribution("edt"), metadata.distribution("numpy")]
    out = make_notices.write_notices(tmp_path / "N.txt", dists)
    text = out.read_text(encoding="utf-8")
    head, _, body = text.partition("=" * 78)
    assert "THIRD-PARTY NOTICES" in head
    for name in ("edt", "numpy", "Python"):
        assert f"\n{name} " in head
    assert f"edt {metadata.version('edt')}\nLicence: LGPL-3.0-or-later" in text
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in body and "Copyright (c) 2005-" in body  # numpy's LICENSE.txt


def test_modules_map_to_their_distributions():
    dists = make_notices.distributions_for_modules({"cc3d", "nrrd", "gdcm", "no_such_module_here"})
    names = sorted(d.metadata["Name"].lower() for d in dists)
    assert names == ["connected-components-3d", "pynrrd", "python-gdcm"]


def test_about_offers_the_notices_when_the_bundle_has_them(qtbot, tmp_path, monkeypatch):
    from app import dialogs

    assert "edt</td><td>" in dialogs.about_html() and "LGPL-3.0-or-later" in dialogs.about_html()
    assert "GPL-3.0 (or commercial)" not in dialogs.about_html()
    monkeypatch.setattr(dialogs, "notices_path", lambda: None)
    about = dialogs.AboutDialog()
    qtbot.addWidget(about)
    assert about.notices_button is None and "installer/make_notices.py" in dialogs.about_html()

    notices = make_notices.write_notices(tmp_path / "THIRD_PARTY_NOTICES.txt", [metadata.distribution("edt")])
    monkeypatch.setattr(dialogs, "notices_path", lambda: notices)
    about = dialogs.AboutDialog()
    qtbot.addWidget(about)
    assert about.notices_button is not None
    shown = []
    monkeypatch.setattr(dialogs.NoticesDialog, "exec", lambda self: shown.append(self.text.toPlainText()))
    about.notices_button.click()
    assert shown and shown[0].startswith("THIRD-PARTY NOTICES") and "LGPL-3.0-or-later" in shown[0]


def test_bundle_resources_path_is_where_about_looks(tmp_path, monkeypatch):
    from app import dialogs

    (tmp_path / "resources").mkdir()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert dialogs.notices_path() is None
    (tmp_path / "resources" / dialogs.NOTICES_FILE).write_text("x", encoding="utf-8")
    assert dialogs.notices_path() == tmp_path / "resources" / dialogs.NOTICES_FILE
