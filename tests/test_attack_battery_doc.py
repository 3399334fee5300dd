"""docs/attack_battery.md names a test for every attack: each named test must exist, so the table
cannot promise a test that was renamed or deleted."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_battery_names_exists():
    text = (ROOT / "docs" / "attack_battery.md").read_text()
    named, missing = 0, []
    current: Path | None = None
    for m in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", text):
        path, test, same_file_test = m.groups()
        if path:
            current = ROOT / path
            if not current.exists():
                missing.append(path)
                continue
        name = test or same_file_test
        if name:
            assert current is not None
            named += 1
            if not re.search(rf"^def {name}\(", current.read_text(), re.MULTILINE):
                missing.append(f"{current.relative_to(ROOT)}::{name}")
    assert named >= 40 and not missing, missing
