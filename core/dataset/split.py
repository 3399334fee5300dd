"""The frozen train / validation / test split, stored in the dataset's state file.

Deterministic: the cases are ordered by a hash of (seed, case id), so the same seed and the
same cases give the same split on any machine and in any listing order. Once frozen it is never
reshuffled: calling again returns it; cases added since are put, one by one in hash order, into
the part furthest below its fraction; removed cases are dropped (and reported) but remembered, so a
case that comes back (an unmounted folder, a file renamed back) returns to its part. A different seed
is refused unless ``force``. Cases nnU-Net / ATM'22 keep in ``imagesTs``/``imagesVal`` are held
out by their authors: they always go to ``test``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.dataset.layout import SPLIT_PARTS, Dataset, natural_key
from core.dataset.state import DatasetState, now_iso, update_state
from core.errors import InputError

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class SplitReport:
    split: dict[str, list[str]]
    seed: int
    fractions: tuple[float, ...]
    created: bool = False  # frozen by this call
    added: dict[str, list[str]] = field(default_factory=dict)  # part -> cases new since the split was frozen
    removed: list[str] = field(default_factory=list)  # cases of the frozen split no longer in the dataset
    created_at: str = ""

    def counts(self) -> dict[str, int]:
        return {part: len(ids) for part, ids in self.split.items()}


def _rank(seed: int, case_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{case_id}".encode()).hexdigest()


def hash_order(seed: int, case_ids: Sequence[str]) -> list[str]:
    return sorted(set(case_ids), key=lambda c: (_rank(seed, c), c))


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != len(SPLIT_PARTS) or any(not math.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
        raise InputError(
            f"Split fractions must be {len(SPLIT_PARTS)} numbers from 0 (train, validation, test), got {list(fractions)}.",
            "E.g. --fractions 0.7 0.15 0.15.",
            path=None,
        )
    total = sum(fr)
    return tuple(f / total for f in fr)


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder apportionment of ``n`` cases (ties to the earlier part)."""
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _held_out(dataset: Dataset) -> set[str]:
    return {c.case_id for c in dataset.cases if c.subset == "Ts"}


def make_split(
    seed: int, case_ids: Sequence[str], fractions: Sequence[float], held_out: Sequence[str] = ()
) -> dict[str, list[str]]:
    """A new split of ``case_ids`` (``held_out`` ones go to test); parts in case-name order."""
    fr = _check_fractions(fractions)
    pinned = set(held_out)
    free = hash_order(seed, [c for c in case_ids if c not in pinned])
    counts = _counts(len(free), fr)
    out: dict[str, list[str]] = {}
    start = 0
    for part, n in zip(SPLIT_PARTS, counts):
        out[part] = free[start : start + n]
        start += n
    out["test"] = out["test"] + [c for c in case_ids if c in pinned]
    return {part: sorted(set(ids), key=natural_key) for part, ids in out.items()}


def extend_split(
    split: dict[str, list[str]],
    seed: int,
    case_ids: Sequence[str],
    fractions: Sequence[float],
    held_out: Sequence[str] = (),
    removed_before: dict[str, str] | None = None,
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """(the split with new cases added and removed ones dropped, added per part, removed). Frozen cases stay put;
    a case removed earlier (``removed_before``: case -> part) that is back returns to its part."""
    fr = _check_fractions(fractions)
    present = set(case_ids)
    pinned = set(held_out)
    parts = {part: [c for c in split.get(part, []) if c in present] for part in SPLIT_PARTS}
    for part, ids in split.items():  # parts of another tool's naming are kept as they are
        if part not in parts:
            parts[part] = [c for c in ids if c in present]
    frozen = {c for ids in split.values() for c in ids}
    removed = sorted(frozen - present, key=natural_key)
    added: dict[str, list[str]] = {}
    for cid, part in sorted((removed_before or {}).items()):
        if cid in present and cid not in frozen and part in parts:
            parts[part].append(cid)  # back (a folder that was unmounted, a file renamed back): never moved
            added.setdefault(part, []).append(cid)
            frozen.add(cid)
    for cid in hash_order(seed, [c for c in case_ids if c not in frozen]):
        if cid in pinned:
            part = "test"
        else:
            free_total = sum(len([c for c in parts[p] if c not in pinned]) for p in SPLIT_PARTS) + 1
            deficits = [
                fr[i] * free_total - len([c for c in parts[p] if c not in pinned]) for i, p in enumerate(SPLIT_PARTS)
            ]
            part = SPLIT_PARTS[max(range(len(SPLIT_PARTS)), key=lambda i: (deficits[i], -i))]
        parts[part].append(cid)
        added.setdefault(part, []).append(cid)
    return {p: sorted(ids, key=natural_key) for p, ids in parts.items()}, added, removed


def freeze_split_report(
    dataset: Dataset, seed: int, fractions: Sequence[float] | None = None, *, force: bool = False
) -> SplitReport:
    """Freeze the split (or return the frozen one, extended by new cases); see the module doc."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"The split seed must be a whole number, got {seed!r}.", path=None)
    wanted = None if fractions is None else _check_fractions(fractions)
    ids = dataset.case_ids
    held = sorted(_held_out(dataset))
    reports: list[SplitReport] = []

    def change(state: DatasetState) -> None:
        if state.split is not None and not force:
            frozen_fr = _check_fractions(state.split_fractions or DEFAULT_FRACTIONS)
            frozen_seed = state.split_seed if state.split_seed is not None else seed
            if frozen_seed != seed:
                raise InputError(
                    f"The split of this dataset was frozen with seed {frozen_seed} ({state.split_created or 'earlier'}); "
                    f"seed {seed} would reshuffle it and change which cases are held out for testing.",
                    f"Use --seed {frozen_seed} to keep it, or add --force to reshuffle (models trained on the old "
                    "split have seen some of the new test cases).",
                    path=dataset.state_path,
                )
            if wanted is not None and any(abs(a - b) > 1e-9 for a, b in zip(wanted, frozen_fr)):
                raise InputError(
                    f"The split of this dataset was frozen with fractions {_show(frozen_fr)}, not {_show(wanted)}.",
                    "Leave --fractions out to keep the frozen split, or add --force to split again.",
                    path=dataset.state_path,
                )
            before = dict(state.split_removed)
            split, added, removed = extend_split(state.split, frozen_seed, ids, frozen_fr, held, before)
            part_was = {c: p for p, members in state.split.items() for c in members}
            back = {c for members in added.values() for c in members}
            state.split_removed = {c: p for c, p in before.items() if c not in back}
            state.split_removed.update({c: part_was[c] for c in removed})
            state.split = split
            reports.append(SplitReport(split, frozen_seed, frozen_fr, False, added, removed, state.split_created))
            return
        fr = wanted or DEFAULT_FRACTIONS
        split = make_split(seed, ids, fr, held)
        state.split, state.split_seed, state.split_fractions = split, seed, list(fr)
        state.split_created = now_iso()
        state.split_removed = {}
        reports.append(SplitReport(split, seed, tuple(fr), True, {}, [], state.split_created))

    update_state(dataset, change)
    report = reports[0]
    part_of = {cid: part for part, ids_ in report.split.items() for cid in ids_}
    dataset.cases = [replace(c, split=part_of.get(c.case_id)) for c in dataset.cases]
    return report


def freeze_split(
    dataset: Dataset, seed: int, fractions: Sequence[float] | None = None, *, force: bool = False
) -> dict[str, list[str]]:
    """The frozen split ``{"train": [...], "validation": [...], "test": [...]}`` (see :func:`freeze_split_report`)."""
    return freeze_split_report(dataset, seed, fractions, force=force).split


def _show(fr: Sequence[float]) -> str:
    return " ".join(f"{f:g}" for f in fr)
