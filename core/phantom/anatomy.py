"""Textbook bronchial anatomy for the phantom: the named branches from the trachea to the segmental bronchi.

The first generations of the phantom's tree are laid out here, each branch
with its true name, so a labeller (core.anatomy) can be measured against truth.
Names as core.anatomy speaks them (Boyden / Jackson-Huber):

- central: Trachea, RMB, LMB, BronInt (bronchus intermedius);
- lobar: RUL, RML, RLL, LUL, LLL and the Lingula (lingular bronchus, from the LUL);
- stems between a lobar and its segmental bronchi: LULupper (upper division:
  LB1+2, LB3), RLLbasal and LLLbasal (basal trunks below the superior segment);
- segmental: RB1..RB10, LB1+2, LB3..LB10, with merged variants RB9+10, LB7+8, LB9+10.

Short common stems that have no name in the nomenclature (the stem of RB9 and
RB10, of LB9 and LB10, and of RB1 and RB2 where the RUL bifurcates) are
branches with name ``""``; so is everything below a segmental bronchus (its
segment is recovered from its ancestry, :func:`lineage`).

Variants drawn per seed (literature frequencies, rounded): the RUL trifurcates
into RB1, RB2, RB3 (~75 %) or bifurcates into RB3 and a stem of RB1 and RB2;
at most one of: RB7 absent (~20 %), LB7+8 as one stem (~20 %), RB9+10 (~10 %),
LB9+10 (~10 %), so a tree has 18 or 19 segmental bronchi.

Geometry: world mm in the patient frame, LPS like ITK (+x patient left, +y
posterior, +z superior). Directions below are written as (lateral, posterior,
superior) and mirrored per side; each is turned by up to 12 degrees about a
random axis, lengths vary +-20 %, radii +-7 %, per seed. Every branch below the
main bronchi ends inside its lung (the ellipsoid less the heart), shortened and
turned towards the lung's centre where the drawn one would leave it.
:func:`core.phantom.tree.grow_tree` then gives each segmental bronchus the
lung ahead of it as its territory (:func:`assign_territory`) and lengthens it
up to 1.5 x towards that territory's centroid (Tawhai's 40 % rule, as for the
unnamed branches below it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# (points, side, margin mm) -> > 0 inside that lung: core.phantom.tree.Chest.lung_depth (tree.py imports this module)
LungDepth = Callable[[np.ndarray, str, float], np.ndarray]


class NamedBranch(Protocol):
    """What :func:`lineage` reads of a branch (core.phantom.tree.Branch)."""

    @property
    def id(self) -> int: ...
    @property
    def parent(self) -> int: ...
    @property
    def name(self) -> str: ...


LOBES: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL")
CENTRAL: tuple[str, ...] = ("Trachea", "RMB", "LMB", "BronInt")
LOBAR: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL", "Lingula")
SUBLOBAR: tuple[str, ...] = ("LULupper", "RLLbasal", "LLLbasal")
SEGMENTAL: tuple[str, ...] = (*(f"RB{k}" for k in range(1, 11)), "LB1+2", *(f"LB{k}" for k in range(3, 11)))
MERGED: tuple[str, ...] = ("RB9+10", "LB7+8", "LB9+10")
SEGMENT_NAMES: frozenset[str] = frozenset((*SEGMENTAL, *MERGED))

_LOBE_OF: dict[str, str] = {
    **{lobe: lobe for lobe in LOBES},
    "Lingula": "LUL",
    "LULupper": "LUL",
    "RLLbasal": "RLL",
    "LLLbasal": "LLL",
    **{f"RB{k}": "RUL" for k in (1, 2, 3)},
    **{f"RB{k}": "RML" for k in (4, 5)},
    **{f"RB{k}": "RLL" for k in (6, 7, 8, 9, 10)},
    "RB9+10": "RLL",
    "LB1+2": "LUL",
    **{f"LB{k}": "LUL" for k in (3, 4, 5)},
    **{f"LB{k}": "LLL" for k in (6, 7, 8, 9, 10)},
    "LB7+8": "LLL",
    "LB9+10": "LLL",
}

# Variants: name -> probability. The count-reducing ones are exclusive (one per tree at most).
RUL_BIFURCATION = 0.25
REDUCING: tuple[tuple[str, float], ...] = (
    ("RB7 absent", 0.20),
    ("LB7+8", 0.20),
    ("RB9+10", 0.10),
    ("LB9+10", 0.10),
)
MAX_TURN_DEG = 12.0  # direction jitter
LENGTH_JITTER = 0.2
RADIUS_JITTER = 0.07
TERRITORY_REACH_MM = 35.0  # a segment is the lung ahead of its bronchus (see assign_territory)


def lobe_of_name(name: str) -> str:
    """The lobe a named bronchus belongs to ("RB6" -> "RLL", "Lingula" -> "LUL"); "" above the lobes or unnamed."""
    return _LOBE_OF.get(name, "")


def is_segmental(name: str) -> bool:
    return name in SEGMENT_NAMES


@dataclass(frozen=True)
class Spec:
    """One named branch of the template. ``key`` is unique in a plan; ``name`` may be "" (an unnamed stem)."""

    key: str
    name: str
    parent: str  # key of the parent
    side: str
    direction: tuple[float, float, float]  # (lateral, posterior, superior), mirrored per side
    length_mm: float
    ratio: float  # radius / parent's radius


def _s(key: str, parent: str, direction: tuple[float, float, float], length: float, ratio: float) -> Spec:
    """A template branch; a key starting with "_" is an unnamed stem."""
    side = "R" if key.lstrip("_").startswith(("R", "BronInt")) else "L"
    return Spec(key, "" if key.startswith("_") else key, parent, side, direction, length, ratio)


def draw_plan(rng: np.random.Generator) -> tuple[list[Spec], list[str]]:
    """The named branches below the main bronchi for one seed (parents before children), and the variants drawn."""
    variants: list[str] = []
    bifurcated = bool(rng.uniform() < RUL_BIFURCATION)
    pick = rng.uniform()
    reducing = ""
    acc = 0.0
    for name, p in REDUCING:
        acc += p
        if pick < acc:
            reducing = name
            break
    if bifurcated:
        variants.append("RUL bifurcation")
    if reducing:
        variants.append(reducing)

    plan: list[Spec] = [
        # right: RUL ~1-2.5 cm below the carina, lateral and a little up; BronInt on down
        _s("RUL", "RMB", (0.9, 0.15, 0.4), 15.0, 0.62),
        _s("BronInt", "RMB", (0.2, 0.15, -1.0), 24.0, 0.82),
        # left: LUL lateral, anterior and up; LLL down and posterior
        _s("LUL", "LMB", (0.7, -0.3, 0.5), 14.0, 0.72),
        _s("LLL", "LMB", (0.2, 0.35, -1.0), 13.0, 0.78),
    ]
    if bifurcated:
        plan += [
            _s("RB3", "RUL", (0.4, -0.9, 0.05), 14.0, 0.65),
            _s("_RB1+2 stem", "RUL", (0.3, 0.45, 0.8), 7.0, 0.8),
            _s("RB1", "_RB1+2 stem", (0.25, 0.0, 1.0), 13.0, 0.78),
            _s("RB2", "_RB1+2 stem", (0.35, 0.9, 0.35), 13.0, 0.78),
        ]
    else:
        plan += [
            _s("RB1", "RUL", (0.25, 0.0, 1.0), 14.0, 0.65),
            _s("RB2", "RUL", (0.35, 0.9, 0.35), 14.0, 0.65),
            _s("RB3", "RUL", (0.4, -0.9, 0.05), 14.0, 0.65),
        ]
    plan += [
        _s("RML", "BronInt", (0.45, -0.75, -0.5), 16.0, 0.55),
        _s("RLL", "BronInt", (0.2, 0.3, -1.0), 11.0, 0.78),
        _s("RB4", "RML", (0.85, -0.35, -0.4), 13.0, 0.78),
        _s("RB5", "RML", (-0.15, -0.85, -0.5), 13.0, 0.78),
        _s("RB6", "RLL", (0.25, 1.0, 0.15), 14.0, 0.6),
        _s("RLLbasal", "RLL", (0.15, 0.05, -1.0), 14.0, 0.9),
    ]
    if reducing != "RB7 absent":
        plan.append(_s("RB7", "RLLbasal", (-0.4, 0.0, -1.0), 14.0, 0.6))
    plan.append(_s("RB8", "RLLbasal", (0.35, -0.65, -0.7), 16.0, 0.68))
    if reducing == "RB9+10":
        plan.append(_s("RB9+10", "RLLbasal", (0.45, 0.45, -0.75), 16.0, 0.78))
    else:
        plan += [
            _s("_RB9+10 stem", "RLLbasal", (0.4, 0.45, -0.8), 8.0, 0.78),
            _s("RB9", "_RB9+10 stem", (0.8, 0.1, -0.6), 14.0, 0.8),
            _s("RB10", "_RB9+10 stem", (0.2, 0.75, -0.65), 14.0, 0.82),
        ]
    plan += [
        _s("LULupper", "LUL", (0.3, -0.05, 1.0), 12.0, 0.8),
        _s("Lingula", "LUL", (0.35, -0.75, -0.55), 16.0, 0.65),
        _s("LB1+2", "LULupper", (0.25, 0.6, 0.8), 15.0, 0.78),
        _s("LB3", "LULupper", (0.3, -0.95, 0.2), 14.0, 0.75),
        _s("LB4", "Lingula", (0.85, -0.35, -0.35), 13.0, 0.8),
        _s("LB5", "Lingula", (0.05, -0.7, -0.7), 13.0, 0.8),
        _s("LB6", "LLL", (0.2, 1.0, 0.15), 14.0, 0.6),
        _s("LLLbasal", "LLL", (0.15, 0.1, -1.0), 14.0, 0.9),
    ]
    if reducing == "LB7+8":
        plan.append(_s("LB7+8", "LLLbasal", (0.05, -0.4, -0.9), 15.0, 0.72))
    else:
        plan += [
            _s("LB7", "LLLbasal", (-0.3, 0.0, -1.0), 13.0, 0.55),
            _s("LB8", "LLLbasal", (0.35, -0.6, -0.7), 15.0, 0.68),
        ]
    if reducing == "LB9+10":
        plan.append(_s("LB9+10", "LLLbasal", (0.45, 0.45, -0.75), 16.0, 0.78))
    else:
        plan += [
            _s("_LB9+10 stem", "LLLbasal", (0.4, 0.45, -0.8), 8.0, 0.78),
            _s("LB9", "_LB9+10 stem", (0.8, 0.1, -0.6), 14.0, 0.8),
            _s("LB10", "_LB9+10 stem", (0.2, 0.75, -0.65), 14.0, 0.82),
        ]
    # breadth-first: a parent always comes before its children
    depth: dict[str, int] = {"RMB": 0, "LMB": 0}
    for s in plan:
        depth[s.key] = depth[s.parent] + 1
    plan.sort(key=lambda s: depth[s.key])
    return plan, variants


@dataclass(frozen=True)
class Placed:
    """A template branch placed in the chest (world mm)."""

    key: str
    name: str
    parent: str  # key; "Trachea" for the main bronchi
    side: str
    start: np.ndarray
    end: np.ndarray
    radius_mm: float

    @property
    def direction(self) -> np.ndarray:
        d = self.end - self.start
        out: np.ndarray = d / max(float(np.linalg.norm(d)), 1e-12)
        return out


def _unit(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def _turn(v: np.ndarray, angle: float, azimuth: float) -> np.ndarray:
    """``v`` (unit) turned by ``angle`` towards the perpendicular at ``azimuth``."""
    a = np.cross(v, [0.0, 0.0, 1.0] if abs(v[2]) < 0.9 else [1.0, 0.0, 0.0])
    a = _unit(a)
    b = np.cross(v, a)
    w = math.cos(azimuth) * a + math.sin(azimuth) * b
    return _unit(math.cos(angle) * v + math.sin(angle) * w)


def layout(
    lung_depth: LungDepth,
    lung_centres: dict[str, np.ndarray],
    rng: np.random.Generator,
    trachea_end: np.ndarray,
    trachea_dir: np.ndarray,
    trachea_radius: float,
) -> tuple[list[Placed], list[str]]:
    """Main bronchi and the drawn plan placed in the lungs: (branches, parents first; variants).

    Every random number is drawn whatever the grid will resolve, so a seed
    gives the same anatomy at every size and spacing.
    """
    d = -trachea_dir
    to_right = np.array([-1.0, rng.uniform(-0.1, 0.1), 0.0])
    to_right = _unit(to_right - np.dot(to_right, d) * d)
    out: list[Placed] = []
    by_key: dict[str, Placed] = {}
    # Carina: right main bronchus short, steep and wide (its RUL takes off ~1-2.5 cm down); left long and shallow.
    for key, angle, ratio, length in (
        ("RMB", math.radians(rng.uniform(22, 30)), rng.uniform(0.84, 0.88), 21.0 * rng.uniform(0.8, 1.2)),
        ("LMB", math.radians(rng.uniform(40, 48)), rng.uniform(0.72, 0.77), rng.uniform(44, 52)),
    ):
        sgn = 1.0 if key == "RMB" else -1.0
        direction = _unit(math.cos(angle) * d + math.sin(angle) * sgn * to_right)
        p = Placed(key, key, "Trachea", key[0], trachea_end, trachea_end + direction * length, trachea_radius * ratio)
        out.append(p)
        by_key[key] = p
    plan, variants = draw_plan(rng)
    for s in plan:
        parent = by_key[s.parent]
        lat, post, sup = s.direction
        nominal = _unit(np.array([lat if s.side == "L" else -lat, post, sup]))
        direction = _turn(nominal, math.radians(rng.uniform(0.0, MAX_TURN_DEG)), rng.uniform(0.0, 2.0 * math.pi))
        length = s.length_mm * rng.uniform(1.0 - LENGTH_JITTER, 1.0 + LENGTH_JITTER)
        radius = parent.radius_mm * s.ratio * rng.uniform(1.0 - RADIUS_JITTER, 1.0 + RADIUS_JITTER)
        start = parent.end
        direction, length = _inside_lung(
            lung_depth, lung_centres[s.side], s.side, start, direction, length, 0.5 * radius
        )
        p = Placed(s.key, s.name, s.parent, s.side, start, start + direction * length, radius)
        out.append(p)
        by_key[s.key] = p
    return out, variants


def _inside_lung(
    lung_depth: LungDepth,
    centre: np.ndarray,
    side: str,
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    margin: float,
) -> tuple[np.ndarray, float]:
    """Shorten ``length`` and turn ``direction`` towards the lung's centre until the end lies in the lung."""
    least = 0.4 * length
    for _ in range(12):
        if float(lung_depth(start + direction * length, side, margin)) > 0:
            break
        length = max(least, 0.85 * length)
        direction = _unit(0.85 * direction + 0.15 * _unit(centre - start))
    return direction, length


def assign_territory(
    leaves: Sequence[Placed], points: np.ndarray, lung_depth: LungDepth, reach_mm: float = TERRITORY_REACH_MM
) -> list[np.ndarray]:
    """Split lung ``points`` among the segmental ``leaves`` of one side.

    Each point goes to the nearest of the leaves' seeds, a seed lying
    ``reach_mm`` on along the leaf's axis (pulled back into the lung): the
    segment is the lung ahead of its bronchus, not the lung around its end,
    which near the hilum would hand most of the lung to whichever bronchus
    points that way first.
    """
    if not leaves:
        return []
    seeds = []
    for p in leaves:
        reach = reach_mm
        while reach > 0 and float(lung_depth(p.end + p.direction * reach, p.side, 0.0)) <= 0:
            reach -= 5.0
        seeds.append(p.end + p.direction * max(reach, 0.0))
    dist = np.linalg.norm(points[:, None, :] - np.stack(seeds)[None, :, :], axis=-1)
    nearest = np.argmin(dist, axis=1)
    return [points[nearest == i] for i in range(len(leaves))]


def lineage(branches: Sequence[NamedBranch]) -> dict[int, tuple[str, str]]:
    """Branch id -> (lobe, segment): from its own name, else inherited from its nearest named ancestor.

    "" where there is none (the trachea and main bronchi have no lobe; nothing
    above a segmental bronchus has a segment).
    """
    by_id = {b.id: b for b in branches}
    out: dict[int, tuple[str, str]] = {}
    for b in sorted(branches, key=lambda b: b.id):  # parents have smaller ids
        lobe, segment = out.get(b.parent, ("", "")) if b.parent in by_id else ("", "")
        if lobe_of_name(b.name):
            lobe = lobe_of_name(b.name)
        if is_segmental(b.name):
            segment = b.name
        out[b.id] = (lobe, segment)
    return out
