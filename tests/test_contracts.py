"""docs/CONTRACTS.md cannot drift (issue 23, item 5): every ``core.x.y`` / ``app.x.Y`` it names exists.

The names are read from the whole document (code spans, headings and prose: a
module named in a heading is a contract too); each is imported (the longest
module prefix) and its remaining parts looked up as attributes. A dataclass
field, an annotated attribute or one set in ``__init__`` counts as an attribute
of its class. A name that is gone fails with the line it is on.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CONTRACTS.md"

SPAN = re.compile(r"`([^`]+)`")
NAME = re.compile(r"(?<![\w.])(?:core|app)(?:\.[A-Za-z_]\w*)+")


def named_in_contracts(text: str) -> dict[str, int]:
    """Dotted ``core.``/``app.`` names in ``text``, with the first line each is on."""
    found: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        for name in NAME.findall(line):
            found.setdefault(name, lineno)
    return found


def test_code_spans_are_read_too():
    spans = [
        n for line in DOC.read_text(encoding="utf-8").splitlines() for s in SPAN.findall(line) for n in NAME.findall(s)
    ]
    assert set(spans) <= set(named_in_contracts(DOC.read_text(encoding="utf-8")))


def _has(owner: object, attr: str) -> bool:
    if hasattr(owner, attr):
        return True
    if isinstance(owner, type):
        if dataclasses.is_dataclass(owner) and attr in {f.name for f in dataclasses.fields(owner)}:
            return True
        for klass in owner.__mro__:  # attributes declared on the class, or set in its __init__
            if attr in getattr(klass, "__annotations__", {}) or attr in _set_in_init(klass):
                return True
    return False


def _set_in_init(klass: type) -> set[str]:
    """Names ``self.NAME = ...`` assigns in ``klass.__init__`` (instance attributes a class shows nowhere else)."""
    init = klass.__dict__.get("__init__")
    if init is None:
        return set()
    try:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                names.add(t.attr)
    return names


def resolve(name: str) -> str | None:
    """None when ``name`` exists, else what is missing."""
    parts = name.split(".")
    module: ModuleType | None = None
    k = len(parts)
    while k > 0:
        try:
            module = importlib.import_module(".".join(parts[:k]))
            break
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:k]).startswith(exc.name):
                raise  # the module exists but imports something missing: a real failure
            k -= 1
    if module is None:
        return f"no module {parts[0]}"
    owner: object = module
    for i, attr in enumerate(parts[k:], start=k):
        if not _has(owner, attr):
            return f"{'.'.join(parts[:i])} has no {attr!r}"
        owner = getattr(owner, attr, None)
        if owner is None:  # an annotated attribute: nothing to look into further
            return None if i == len(parts) - 1 else f"{'.'.join(parts[: i + 1])} is not an object to look into"
    return None


def test_the_scan_finds_the_documents_names():
    found = named_in_contracts(DOC.read_text(encoding="utf-8"))
    assert len(found) > 80, sorted(found)
    for name in ("core.io.itk", "core.review.LabelLayer", "app.review.case.Case", "app.workers.Job.cancel_event"):
        assert name in found


def test_a_name_that_is_gone_is_caught():
    found = named_in_contracts("- `core.tree.parse_tree(mask)`, `core.tree.no_such_function()` and `app.nope.Thing`")
    assert list(found) == ["core.tree.parse_tree", "core.tree.no_such_function", "app.nope.Thing"]
    assert resolve("core.tree.parse_tree") is None
    assert resolve("core.tree.no_such_function") == "core.tree has no 'no_such_function'"
    assert resolve("app.nope.Thing") == "app has no 'nope'"


def test_every_name_in_contracts_exists():
    missing = []
    for name, lineno in named_in_contracts(DOC.read_text(encoding="utf-8")).items():
        problem = resolve(name)
        if problem:
            missing.append(f"docs/CONTRACTS.md:{lineno}: {name} ({problem})")
    assert missing == [], "\n".join(missing)


@pytest.mark.parametrize("name", ["MainWindow.segment_with", "SegmentPanel.segment_with"])
def test_what_contracts_says_of_segment_with_is_what_the_code_has(name):
    """CONTRACTS.md said both that segmentation has one route and that segment_with ran core.inference in a job."""
    text = DOC.read_text(encoding="utf-8")
    cls, method = name.split(".")
    module = {"MainWindow": "app.main_window", "SegmentPanel": "app.review.segment_panel"}[cls]
    exists = hasattr(getattr(importlib.import_module(module), cls), method)
    mentioned = name in text or (cls == "MainWindow" and "window.segment_with" in text)
    assert mentioned == exists, f"{name}: in the code {exists}, in CONTRACTS.md {mentioned}"
