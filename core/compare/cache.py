"""Content-keyed cache of compare work.

A volume's key is the SHA-256 of its mask bits, shape, geometry and label
selector, so a renamed or re-saved but unchanged file is still a hit. To make
an unchanged rerun fast without decoding any volume, the key of each file is
remembered against the SHA-256 of the file's bytes in ``files.json``: never
against its path, size or modification time, so a file replaced by another of
the same size and date is hashed to a new key and scored again.

Layout: ``ROOT/files.json``, ``ROOT/trees/<ref key>.npz`` (parsed reference
trees), ``ROOT/metrics/<key>.json``, ``ROOT/snapshots/<key>.png``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.outputs import (
    atomic_write_bytes as atomic_write,  # one atomic writer (umask modes); compare imports it from here
)

CACHE_VERSION = 2  # bump when what a cached entry holds changes


def mask_key(volume: Any, selector: str | None = None) -> str:
    """Key of a ``LabelVolume``'s content (mask bits + shape + geometry + selector)."""
    arr = np.asarray(volume.array if hasattr(volume, "array") else volume)
    mask = arr if arr.dtype == bool else arr != 0
    h = hashlib.sha256()
    h.update(repr((CACHE_VERSION, mask.shape, str(selector))).encode())
    g = getattr(volume, "geometry", None)
    if g is not None:
        h.update(
            repr(
                (
                    tuple(round(v, 6) for v in g.spacing),
                    tuple(round(v, 4) for v in g.origin),
                    tuple(round(v, 6) for v in g.direction),
                )
            ).encode()
        )
    h.update(np.packbits(np.ascontiguousarray(mask), axis=None).tobytes())
    return h.hexdigest()[:32]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (checkpoints, CTs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:32]


def text_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Cache:
    """``root=None``: nothing is stored (every lookup misses). ``stats`` counts hits and misses."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root)
        self.stats: Counter[str] = Counter()
        self._files: dict[str, str] = {}
        self._digests: dict[Path, str] = {}
        self._dirty = False
        if self.root is not None:
            try:
                data = json.loads((self.root / "files.json").read_text(encoding="utf-8"))
                if data.get("version") == CACHE_VERSION:
                    self._files = dict(data.get("files", {}))
            except (OSError, ValueError):
                pass

    # -- file -> content key ---------------------------------------------------------
    def _bytes_id(self, path: Path, tag: str) -> str:
        """The file's bytes digest (hashed once per path and run) with the tag."""
        p = Path(path).resolve()
        d = self._digests.get(p)
        if d is None:
            d = self._digests[p] = file_digest(p)
        return f"{d}|{tag}"

    def known_key(self, path: Path, tag: str = "") -> str | None:
        if self.root is None:
            return None
        try:
            return self._files.get(self._bytes_id(Path(path), tag))
        except OSError:
            return None

    def remember_key(self, path: Path, key: str, tag: str = "") -> None:
        if self.root is None:
            return
        self._files[self._bytes_id(Path(path), tag)] = key
        self._dirty = True

    def digest(self, path: Path, tag: str = "bytes") -> str:
        """File-bytes digest (checkpoints, CTs)."""
        return self._bytes_id(Path(path), tag).partition("|")[0]

    # -- entries --------------------------------------------------------------------------
    def get_json(self, kind: str, key: str) -> Any:
        if self.root is None:
            self.stats[f"{kind}_misses"] += 1
            return None
        try:
            value = json.loads((self.root / kind / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.stats[f"{kind}_misses"] += 1
            return None
        self.stats[f"{kind}_hits"] += 1
        return value

    def put_json(self, kind: str, key: str, value: Any) -> None:
        if self.root is not None:
            atomic_write(self.root / kind / f"{key}.json", json.dumps(value).encode())

    def path(self, kind: str, name: str) -> Path | None:
        return None if self.root is None else self.root / kind / name

    def save(self) -> None:
        if self.root is not None and self._dirty:
            atomic_write(
                self.root / "files.json",
                json.dumps({"version": CACHE_VERSION, "files": self._files}, indent=0).encode(),
            )
            self._dirty = False
