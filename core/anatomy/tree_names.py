"""The names of one tree's branches: what the labeller decided, and what the user corrected."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.anatomy.names import is_known_name, is_segmental, lobe_of_name
from core.errors import InputError
from core.tree import AirwayTree

JSON_VERSION = 1


@dataclass(frozen=True)
class BranchName:
    name: str | None  # None = abstained ("unnamed")
    confidence: float  # 0..1
    lobe: str | None  # inherited by descendants
    segment: str | None  # segmental ancestor's name (inherited by descendants), None above segments
    source: str = "auto"  # "auto" | "user"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "confidence": round(float(self.confidence), 4),
            "lobe": self.lobe,
            "segment": self.segment,
            "source": self.source,
        }


def _parent_map(tree: AirwayTree, parents: dict[int, int | None]) -> dict[int, int | None]:
    return parents if parents else {b.id: b.parent for b in tree.branches}


def _descendants(tree: AirwayTree, branch_id: int, parents: dict[int, int | None]) -> list[int]:
    """``branch_id``'s descendants, parents before children."""
    kids: dict[int, list[int]] = {}
    for b, p in sorted(_parent_map(tree, parents).items()):
        if p is not None:
            kids.setdefault(p, []).append(b)
    out: list[int] = []
    queue = list(kids.get(branch_id, []))
    while queue:
        b = queue.pop(0)
        out.append(b)
        queue.extend(kids.get(b, []))
    return out


@dataclass
class TreeNames:
    names: dict[int, BranchName] = field(default_factory=dict)  # core.tree.AirwayTree branch id -> its name
    warnings: list[str] = field(default_factory=list)
    # branch id -> parent as the labeller read the tree: the parse's own, except where the parse's
    # root (its largest region) is not the trachea and the labeller re-rooted it at the trachea
    parents: dict[int, int | None] = field(default_factory=dict)

    # -- lookups --------------------------------------------------------------------
    def _get(self, branch_id: int) -> BranchName | None:
        return self.names.get(int(branch_id))

    def name_of(self, branch_id: int) -> str | None:
        n = self._get(branch_id)
        return n.name if n else None

    def lobe_of(self, branch_id: int) -> str | None:
        n = self._get(branch_id)
        return n.lobe if n else None

    def segment_of(self, branch_id: int) -> str | None:
        n = self._get(branch_id)
        return n.segment if n else None

    def confidence_of(self, branch_id: int) -> float:
        n = self._get(branch_id)
        return n.confidence if n else 0.0

    def branches_named(self, name: str) -> list[int]:
        return sorted(b for b, n in self.names.items() if n.name == name)

    def named(self) -> set[str]:
        """Every name given to at least one branch."""
        return {n.name for n in self.names.values() if n.name}

    def label_text(self, branch_id: int) -> str:
        """ "RB6"; below a named segment "RB6 (distal)"; else "RLL (unnamed)"; else "unnamed"."""
        n = self._get(branch_id)
        if n is None:
            return "unnamed"
        if n.name:
            return n.name
        if n.segment:
            return f"{n.segment} (distal)"
        if n.lobe:
            return f"{n.lobe} (unnamed)"
        return "unnamed"

    # -- corrections ----------------------------------------------------------------
    def corrected(self, tree: AirwayTree, branch_id: int, name: str | None) -> TreeNames:
        """A copy where the user named ``branch_id`` ``name`` (None: "not this name"); descendants follow.

        Descendants take the corrected branch's lobe and segment; those that carried the branch's old
        name (the same bronchus, split by the parse) take the new one; automatic names that no longer
        fit (another lobe, a segment inside a segment) are dropped. Names the user gave stay.
        """
        branch_id = int(branch_id)
        if branch_id not in {b.id for b in tree.branches}:
            raise InputError(f"Branch {branch_id} is not in this tree.", "Pick a branch of the tree shown.")
        if name is not None and not is_known_name(name):
            from core.anatomy.names import ALL_NAMES

            raise InputError(f"'{name}' is not a bronchus name.", f"Use one of: {', '.join(ALL_NAMES)}.")
        names = dict(self.names)
        old = names.get(branch_id)
        old_name = old.name if old else None
        names[branch_id] = BranchName(name, 1.0, None, None, "user")
        new_lobe = lobe_of_name(name)
        below = _descendants(tree, branch_id, self.parents)
        for d in below:
            cur = names.get(d)
            if cur is None or cur.source == "user":
                continue
            keep = cur.name
            if keep is not None and keep == old_name:
                keep = name
            elif keep is not None and (
                (new_lobe is not None and lobe_of_name(keep) not in (None, new_lobe))
                or (is_segmental(name) and is_segmental(keep))
            ):
                keep = None
            if keep != cur.name:
                names[d] = replace(cur, name=keep, source="user" if keep is not None else cur.source)
        out = TreeNames(names, list(self.warnings), dict(self.parents))
        out._inherit(tree, [branch_id, *below])
        return out

    def _inherit(self, tree: AirwayTree, ids: list[int]) -> None:
        """Recompute lobe and segment of ``ids`` (parents first) from their names and their parents'."""
        parent = _parent_map(tree, self.parents)
        for b in ids:
            cur = self.names.get(b) or BranchName(None, 0.0, None, None)
            p = parent.get(b)
            pn = self.names.get(p) if p else None
            lobe = lobe_of_name(cur.name) or (pn.lobe if pn else None)
            if lobe is None and cur.name is None:
                lobe = cur.lobe  # e.g. from a lobe mask, where no named ancestor says otherwise
            if is_segmental(cur.name):
                segment = cur.name
            elif cur.name is not None and lobe_of_name(cur.name) is not None and not is_segmental(cur.name):
                segment = None  # a lobar or sub-lobar stem lies above the segments
            else:
                segment = pn.segment if pn else None
            self.names[b] = replace(cur, lobe=lobe, segment=segment)

    # -- files ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "branches": [
                {"id": b, "parent": self.parents.get(b), **self.names[b].to_json()} for b in sorted(self.names)
            ],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, doc: Any) -> TreeNames:
        fix = "Label the tree again (airway label --input MASK --out DIR writes one)."
        if not isinstance(doc, dict) or not isinstance(doc.get("branches"), list):
            raise InputError("Not a branch-name file (no 'branches' list).", fix)
        if doc.get("version") != JSON_VERSION:
            raise InputError(f"Branch-name file version {doc.get('version')} is not {JSON_VERSION}.", fix)
        names: dict[int, BranchName] = {}
        parents: dict[int, int | None] = {}
        try:
            for row in doc["branches"]:
                name = row.get("name")
                if name is not None and not is_known_name(str(name)):
                    raise InputError(f"Unknown bronchus name '{name}' in the branch-name file.", fix)
                p = row.get("parent")
                parents[int(row["id"])] = None if p is None else int(p)
                names[int(row["id"])] = BranchName(
                    name=None if name is None else str(name),
                    confidence=float(row.get("confidence", 0.0)),
                    lobe=row.get("lobe"),
                    segment=row.get("segment"),
                    source=str(row.get("source", "auto")),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"Malformed branch-name file ({exc.__class__.__name__}: {exc}).", fix) from None
        if all(p is None for p in parents.values()):
            parents = {}
        return cls(names, [str(w) for w in doc.get("warnings", [])], parents)

    def table(self, tree: AirwayTree) -> list[dict[str, Any]]:
        """One row per branch: id, name, confidence, lobe, segment, generation, length, mean diameter."""
        rows = []
        for b in tree.branches:
            n = self.names.get(b.id) or BranchName(None, 0.0, None, None)
            rows.append(
                {
                    "branch": b.id,
                    "name": n.name or "",
                    "label": self.label_text(b.id),
                    "confidence": round(float(n.confidence), 3),
                    "lobe": n.lobe or "",
                    "segment": n.segment or "",
                    "source": n.source,
                    "parent": (self.parents.get(b.id) if self.parents else b.parent) or "",
                    "generation": b.generation,
                    "length_mm": round(float(b.length_mm), 2),
                    "mean_diameter_mm": round(float(b.mean_diameter_mm), 2),
                }
            )
        return rows
