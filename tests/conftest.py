"""Shared fixtures: kept small. Generated phantoms only; real data lives in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    # autosaves of the tests' edits go to a private folder, never the user's
    # cache (where a window would offer to recover them)
    import os
    import tempfile

    os.environ.setdefault("AIRWAY_STUDIO_RECOVERY_DIR", tempfile.mkdtemp(prefix="airway-recovery-"))


def pytest_sessionfinish(session, exitstatus):
    # `-m "not slow"` (the inner loop, docs/testing.md) or `-k` over files whose tests are all
    # deselected runs nothing, and pytest exits 5, which a CI step reads as a failure: a
    # selection that matched nothing is not an error. Nothing collected at all still is.
    option = session.config.option
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and (option.markexpr or option.keyword):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("no test matched the -m/-k selection: exit status 0, not 5")
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(autouse=True)
def _no_unanswered_dialog(monkeypatch):
    """A modal message box that no test answers blocks the event loop until pytest-timeout ends the
    test (900 s of CI): a test that does not expect a dialog fails at once, naming it. Tests that
    expect one patch ``QMessageBox.exec`` (or ``question``, ...) themselves, which replaces this."""
    import sys

    widgets = sys.modules.get("PySide6.QtWidgets")  # only where a test module brought Qt in
    if widgets is not None:

        def unanswered(box) -> None:
            raise AssertionError(
                f"unexpected modal dialog: {box.text()!r} {box.informativeText()!r} {box.detailedText()[:3000]}"
            )

        monkeypatch.setattr(widgets.QMessageBox, "exec", unanswered)

        # the static helpers (question, warning, ...) run their own C++ loop, not exec above
        def unanswered_static(*args, **kwargs):
            texts = [a for a in args if isinstance(a, str)]
            raise AssertionError(f"unexpected modal dialog: {texts!r}")

        for name in ("question", "warning", "critical", "information"):
            monkeypatch.setattr(widgets.QMessageBox, name, staticmethod(unanswered_static))
    yield


@pytest.fixture(scope="session")
def app_look(qapp):
    """The application as users get it (`airway-studio`): Fusion style and the app's theme, whose
    style sheet moves toolbar and status-bar geometry. Layout tests measure this, not Qt's default."""
    from app.main_window import apply_theme

    qapp.setStyle("Fusion")
    apply_theme(qapp)
    return qapp


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (read-only real CTs); skips when a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real data for tests is only on the developers' machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_demo():
    """The demo case at test size (48 x 64 x 64): phantom, reference and simulated prediction."""
    from app.demo import TEST_PARAMS, make_demo

    return make_demo(TEST_PARAMS)
