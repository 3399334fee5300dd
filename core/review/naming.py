"""Names of predictions that people can tell apart.

Every team of a challenge submits the same file name (ATM'22: ``ATM_305_0000.nii.gz``
in ``preds_YangLab/`` and ``preds_timi/``). Shown as "ATM_305_0000" and
"ATM_305_0000 (2)" nobody knows which is which; the folder they came from does:
``preds_YangLab/ATM_305_0000`` and ``preds_timi/ATM_305_0000``. The app (combo,
tables, panes) and the command line use these names alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

# deeper than this the names stop being readable; a counter tells the rest apart
MAX_FOLDERS = 3


def qualified(name: str, path: str | None, folders: int) -> str:
    """``name`` behind the last ``folders`` folders of ``path`` (``preds_timi/ATM_305_0000``)."""
    if not path or folders <= 0:
        return name
    parents = [p for p in PurePath(path).parent.parts if p not in ("/", "\\", "")]
    tail = parents[-folders:] if parents else []
    return "/".join([*tail, name])


def distinct_names(items: Sequence[tuple[str, str | None]], taken: Sequence[str] = ()) -> list[str]:
    """Display names for ``(name, path)`` pairs, in order.

    A name shared by files in different folders gets as many of their folders as
    tell them apart (up to :data:`MAX_FOLDERS`); what is still shared (the same file
    twice, or layers made in memory) gets `` (2)``, `` (3)`` in order. ``taken``:
    names already in use elsewhere (e.g. ``"reference"``)."""
    out = [name for name, _ in items]
    groups: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(items):
        groups.setdefault(name, []).append(i)
    for name, idx in groups.items():
        if len(idx) < 2 and name not in taken:
            continue
        with_path = [i for i in idx if items[i][1]]
        folders_of = {i: str(PurePath(str(items[i][1])).parent) for i in with_path}
        if len(set(folders_of.values())) < 2 and name not in taken:
            continue  # one folder (the same file twice): folders tell nothing apart
        for folders in range(1, MAX_FOLDERS + 1):
            candidates = {i: qualified(name, items[i][1], folders) for i in with_path}
            if len(set(candidates.values())) == len(candidates):
                break
        for i in with_path:
            out[i] = candidates[i]
    seen: set[str] = set(taken)
    for i, name in enumerate(out):
        base, k = name, 2
        while name in seen:
            name = f"{base} ({k})"
            k += 1
        out[i] = name
        seen.add(name)
    return out
