"""A textbook bronchial tree in millimetres, with its names: a known answer for tests and docs.

Trachea, main, lobar and the 18-20 segmental bronchi (Boyden) as straight tubes in the LPS world
(+x patient left, +y posterior, +z superior; carina at the origin), each segmental bronchus ending
in two subsegmental ones. Variants: ``rb7=False`` drops the medial basal RB7; ``merged_rb910`` grows
RB9+10 as one segment; ``split_lb78`` grows LB7 and LB8 apart (else LB7+8);
``rul_bifurcation`` gives the RUL RB3 and a common stem of RB1 and RB2 (else it trifurcates). :func:`textbook_mask` draws
it on a grid of any spacing, optionally flipped, as a :class:`core.volume.LabelVolume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.volume import Geometry, LabelVolume, mat3, vec3

P = tuple[float, float, float]


@dataclass(frozen=True)
class Tube:
    id: int
    parent: int
    start: P
    end: P
    radius_mm: float
    name: str


def textbook_tree(
    *,
    rb7: bool = True,
    merged_rb910: bool = False,
    split_lb78: bool = False,
    rul_bifurcation: bool = False,
    subsegments: bool = True,
) -> list[Tube]:
    tubes: list[Tube] = []
    ends: dict[str, P] = {}

    def add(name: str, parent: str, end: P, r: float, start: P | None = None) -> None:
        s = start if start is not None else ends[parent]
        pid = next((t.id for t in tubes if t.name == parent), -1)
        tubes.append(Tube(len(tubes), pid, s, end, r, name))
        ends[name] = end

    add("Trachea", "", (0.0, 0.0, 0.0), 8.0, start=(0.0, 2.0, 90.0))
    add("RMB", "Trachea", (-20.0, 0.0, -18.0), 6.0)
    add("LMB", "Trachea", (35.0, 5.0, -25.0), 5.0)
    add("RUL", "RMB", (-40.0, 0.0, -8.0), 4.0)
    if rul_bifurcation:  # RB3 and a common stem of RB1 and RB2 (about a quarter of people)
        add("RB3", "RUL", (-62.0, -28.0, -10.0), 2.6)
        add("_rb12", "RUL", (-44.0, 8.0, 2.0), 3.2)
        add("RB1", "_rb12", (-47.0, 6.0, 28.0), 2.6)
        add("RB2", "_rb12", (-64.0, 32.0, 6.0), 2.6)
    else:  # a trifurcation
        add("RB1", "RUL", (-45.0, 2.0, 22.0), 2.6)
        add("RB2", "RUL", (-62.0, 28.0, 2.0), 2.6)
        add("RB3", "RUL", (-62.0, -28.0, -10.0), 2.6)
    add("BronInt", "RMB", (-25.0, 2.0, -42.0), 5.0)
    add("RML", "BronInt", (-35.0, -22.0, -55.0), 3.5)
    add("RB4", "RML", (-62.0, -35.0, -58.0), 2.4)
    add("RB5", "RML", (-25.0, -50.0, -75.0), 2.4)
    add("RLL", "BronInt", (-30.0, 5.0, -58.0), 4.6)
    add("RB6", "RLL", (-42.0, 40.0, -50.0), 2.8)
    add("RLLbasal", "RLL", (-35.0, 5.0, -75.0), 4.2)
    if rb7:
        add("RB7", "RLLbasal", (-15.0, 0.0, -100.0), 2.4)
        add("_b2", "RLLbasal", (-40.0, 6.0, -86.0), 3.9)
        trunk = "_b2"
    else:
        trunk = "RLLbasal"
    add("RB8", trunk, (-52.0, -30.0, -110.0), 2.6)
    if merged_rb910:
        add("RB9+10", trunk, (-60.0, 30.0, -120.0), 3.0)
    else:
        add("_b910", trunk, (-48.0, 14.0, -96.0), 3.4)
        add("RB9", "_b910", (-75.0, 10.0, -118.0), 2.6)
        add("RB10", "_b910", (-45.0, 45.0, -122.0), 2.6)
    add("LUL", "LMB", (45.0, -5.0, -15.0), 4.2)
    add("LULupper", "LUL", (50.0, -5.0, 0.0), 3.6)
    add("LB1+2", "LULupper", (50.0, 22.0, 32.0), 2.6)
    add("LB3", "LULupper", (66.0, -35.0, 5.0), 2.6)
    add("Lingula", "LUL", (56.0, -25.0, -35.0), 3.2)
    add("LB4", "Lingula", (82.0, -32.0, -30.0), 2.3)
    add("LB5", "Lingula", (50.0, -50.0, -66.0), 2.3)
    add("LLL", "LMB", (40.0, 10.0, -45.0), 4.5)
    add("LB6", "LLL", (52.0, 45.0, -36.0), 2.8)
    add("LLLbasal", "LLL", (45.0, 10.0, -64.0), 4.2)
    if split_lb78:  # LB7 and LB8 each from the basal trunk (a common stem of theirs would be LB7+8)
        add("LB7", "LLLbasal", (28.0, 2.0, -96.0), 2.4)
        add("LB8", "LLLbasal", (54.0, -30.0, -94.0), 2.4)
    else:
        add("LB7+8", "LLLbasal", (42.0, -25.0, -96.0), 2.8)
    add("_l910", "LLLbasal", (55.0, 16.0, -80.0), 3.4)
    add("LB9", "_l910", (80.0, 10.0, -100.0), 2.6)
    add("LB10", "_l910", (55.0, 45.0, -106.0), 2.6)
    if subsegments:
        parents = {t.parent for t in tubes}
        for t in list(tubes):
            if t.id in parents:
                continue
            d = np.subtract(t.end, t.start)
            d = d / np.linalg.norm(d)
            perp = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
            perp /= np.linalg.norm(perp)
            for sgn in (1.0, -1.0):
                e = np.asarray(t.end) + 14.0 * (0.8 * d + 0.6 * sgn * perp)
                tubes.append(Tube(len(tubes), t.id, t.end, (float(e[0]), float(e[1]), float(e[2])), 1.9, ""))
    return [Tube(t.id, t.parent, t.start, t.end, t.radius_mm, "" if t.name.startswith("_") else t.name) for t in tubes]


def tube_rows(tubes: list[Tube]) -> list[dict[str, Any]]:
    """The tubes as rows of a phantom branch table (``start_x_mm`` ... ``end_z_mm``, ``name``)."""
    rows = []
    for t in tubes:
        row: dict[str, Any] = {"id": t.id, "parent": t.parent, "radius_mm": t.radius_mm, "name": t.name}
        for which, p in (("start", t.start), ("end", t.end)):
            for axis, v in zip("xyz", p):
                row[f"{which}_{axis}_mm"] = v
        rows.append(row)
    return rows


def textbook_mask(
    tubes: list[Tube], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), flip: str = ""
) -> LabelVolume:
    """The tubes drawn on a grid of ``spacing`` (x, y, z mm); ``flip`` names index axes ("x", "xz") stored reversed."""
    pts = np.array([p for t in tubes for p in (t.start, t.end)])
    lo = pts.min(axis=0) - 6.0
    hi = pts.max(axis=0) + 6.0
    sp = np.asarray(spacing, dtype=float)
    n = np.ceil((hi - lo) / sp).astype(int) + 1  # x, y, z
    shape = (int(n[2]), int(n[1]), int(n[0]))
    mask = np.zeros(shape, dtype=bool)
    for t in tubes:
        a, b = np.asarray(t.start), np.asarray(t.end)
        blo = np.floor((np.minimum(a, b) - t.radius_mm - lo) / sp).astype(int).clip(0, n - 1)
        bhi = np.ceil((np.maximum(a, b) + t.radius_mm - lo) / sp).astype(int).clip(0, n - 1) + 1
        xs = lo[0] + sp[0] * np.arange(blo[0], bhi[0])
        ys = lo[1] + sp[1] * np.arange(blo[1], bhi[1])
        zs = lo[2] + sp[2] * np.arange(blo[2], bhi[2])
        Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
        q = np.stack([X, Y, Z], axis=-1) - a
        d = b - a
        s = np.clip((q @ d) / float(d @ d), 0.0, 1.0)
        dist = np.linalg.norm(q - s[..., None] * d, axis=-1)
        mask[blo[2] : bhi[2], blo[1] : bhi[1], blo[0] : bhi[0]] |= dist <= t.radius_mm
    direction = np.eye(3)
    origin = lo.copy()
    for axis in flip:
        k = "xyz".index(axis)
        mask = np.flip(mask, axis=2 - k)
        origin = origin + direction[:, k] * sp[k] * (n[k] - 1)
        direction[:, k] = -direction[:, k]
    geo = Geometry(spacing=vec3(sp), origin=vec3(origin), direction=mat3(direction))
    return LabelVolume(np.ascontiguousarray(mask).astype(np.uint8), geo)
