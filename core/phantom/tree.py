"""Anatomy of the airway phantom, in millimetres: a chest and a bronchial tree.

Everything here is geometry in world coordinates (x, y, z) mm, LPS like ITK:
+x towards the patient's left, +y posterior, +z superior. Nothing here touches
a voxel grid; :mod:`core.phantom.raster` turns the shapes into voxels.

Numbers are textbook adult anatomy, jittered per seed:
- trachea 15-18 mm wide, carina about 90 mm below the lung apices;
- down to the segmental bronchi, named textbook anatomy with per-seed
  variants (:mod:`core.phantom.anatomy`): right main bronchus short, steep
  (~25 deg from the tracheal axis) and wide, its RUL 1-2.5 cm below the carina;
  left main bronchus long and shallow (~45 deg); five lobar bronchi, the
  lingula and 18-19 segmental bronchi, each branch's name in ``Branch.name``;
- below each segmental bronchus, a space-filling tree in its territory (see
  :func:`grow_tree`): Murray-law radii from each child's share of the lung
  (mean ratio ~0.79, as Weibel/Horsfield), angles mostly 25-65 deg to the
  parent axis, lengths 2.5-4 x diameter, two children per bifurcation,
  asymmetric where the territory is; these branches have no name;
- walls 0.17 x diameter thick, at least 0.5 mm.
Branches below the trachea's two main bronchi stay inside their lung (an
ellipsoid with the heart carved out); growth stops at ``generations``, when a
child would be thinner than ``min_radius_mm``, would leave the lung, or has no
territory left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from core.phantom.anatomy import Placed, assign_territory, is_segmental, layout

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Branch:
    """One airway segment: a straight tube (capsule) from ``start`` to ``end`` (world mm)."""

    id: int
    parent: int  # -1 for the trachea
    generation: int  # trachea 0, main bronchi 1, lobar 2, ...
    start: Point
    end: Point
    radius_mm: float  # lumen radius
    wall_mm: float  # wall thickness
    side: str = ""  # "R" or "L" (patient side), "" for the trachea
    name: str = ""  # true anatomical name down to the segmental bronchi (core.phantom.anatomy), "" below

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.subtract(self.end, self.start)))

    @property
    def diameter_mm(self) -> float:
        return 2.0 * self.radius_mm

    @property
    def midpoint(self) -> Point:
        return tuple(float(v) for v in (np.add(self.start, self.end) / 2.0))  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        d = np.subtract(self.end, self.start)
        return d / max(float(np.linalg.norm(d)), 1e-12)


@dataclass(frozen=True)
class Ellipsoid:
    centre: Point
    semi: Point  # semi-axes along x, y, z (mm)

    def level(self, p: np.ndarray, grow: float = 0.0) -> np.ndarray:
        """sum(((p - c) / (semi + grow))^2): < 1 inside the ellipsoid grown by ``grow`` mm."""
        q = (np.asarray(p, dtype=float) - np.asarray(self.centre)) / (np.asarray(self.semi) + grow)
        out: np.ndarray = np.sum(q * q, axis=-1)
        return out


@dataclass(frozen=True)
class Chest:
    """The body the tree lives in (world mm, chest centre near the origin)."""

    body_semi: tuple[float, float]  # elliptic cylinder along z: semi-axes x, y
    fat_mm: float  # subcutaneous fat thickness
    lungs: tuple[Ellipsoid, Ellipsoid]  # right (x < 0), left (x > 0)
    heart: Ellipsoid  # carved out of the lungs
    spine_centre: tuple[float, float]  # x, y of the vertebral column (a cylinder along z)
    spine_radius: float
    carina: Point
    trachea_radius: float
    trachea_length: float

    @staticmethod
    def nominal_extent() -> tuple[float, float, float]:
        """Box (x, y, z mm) that holds the body's width, depth and both lungs, whatever the seed."""
        return (350.0, 250.0, 290.0)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Chest:

        def j(s: float) -> float:  # a tiny jitter: 1 +- s
            return float(1.0 + s * rng.uniform(-1.0, 1.0))

        lung_semi = (60.0 * j(0.04), 84.0 * j(0.05), 122.0 * j(0.04))
        lung_x = 68.0 * j(0.03)
        lung_y = 8.0
        carina = (rng.uniform(-2.0, 2.0), -6.0 + rng.uniform(-3.0, 3.0), 32.0 + rng.uniform(-4.0, 4.0))
        lung_z = carina[2] - 34.0
        lungs = (
            Ellipsoid((-lung_x, lung_y, lung_z), lung_semi),
            Ellipsoid((lung_x * j(0.02), lung_y, lung_z - 4.0), (lung_semi[0] * 0.95, lung_semi[1], lung_semi[2])),
        )
        heart = Ellipsoid((22.0, -48.0, lung_z - 72.0), (55.0 * j(0.05), 45.0 * j(0.05), 50.0 * j(0.05)))
        return cls(
            body_semi=(165.0 * j(0.03), 112.0 * j(0.03)),
            fat_mm=12.0 * j(0.2),
            lungs=lungs,
            heart=heart,
            spine_centre=(0.0, 78.0),
            spine_radius=17.0,
            carina=carina,
            trachea_radius=8.2 * j(0.06),  # 15.4 - 17.4 mm wide
            trachea_length=110.0,
        )

    def lung_depth(self, p: np.ndarray, side: str, margin: float) -> np.ndarray:
        """> 0 where ``p`` lies inside lung ``side`` with ``margin`` mm to spare (heart excluded)."""
        lung = self.lungs[0 if side == "R" else 1]
        inside = 1.0 - lung.level(p, grow=-margin)
        outside_heart = self.heart.level(p, grow=margin) - 1.0
        return np.minimum(inside, outside_heart)


def wall_thickness(radius_mm: float) -> float:
    """0.17 x diameter, at least 0.5 mm (thin-section CT literature: 0.15-0.2 x D)."""
    return max(0.5, 0.34 * radius_mm)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _perp(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Component of ``v`` perpendicular to unit ``d``, normalised (any perpendicular if degenerate)."""
    w = v - np.dot(v, d) * d
    if np.linalg.norm(w) < 1e-6:
        w = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    return _unit(w)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about unit ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    out: np.ndarray = v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1.0 - c)
    return out


@dataclass
class _Grow:
    branch: Branch
    ref: np.ndarray  # in-plane vector of the bifurcation that made this branch (perpendicular to it)
    points: np.ndarray  # (n, 3) the lung territory this branch supplies
    key: str = ""  # its key in the anatomical template (core.phantom.anatomy), "" below the segmental bronchi


@dataclass
class Tree:
    branches: list[Branch]
    normals: list[np.ndarray] = field(default_factory=list)  # per branch: normal of its own branching plane
    variants: list[str] = field(default_factory=list)  # anatomical variants drawn for this seed
    not_grown: dict[str, str] = field(default_factory=dict)  # named branch -> why it is not in the tree

    def children(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {b.id: [] for b in self.branches}
        for b in self.branches:
            if b.parent >= 0:
                out[b.parent].append(b.id)
        return out

    def terminals(self) -> list[int]:
        ch = self.children()
        return [b.id for b in self.branches if not ch[b.id]]


def lung_points(chest: Chest, side: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly spread in lung ``side`` (heart excluded): the territory to supply."""
    lung = chest.lungs[0 if side == "R" else 1]
    c, s = np.asarray(lung.centre), np.asarray(lung.semi)
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        p = c + s * rng.uniform(-1.0, 1.0, (2 * n, 3))
        p = p[chest.lung_depth(p, side, 0.0) > 0]
        out.append(p)
        have += len(p)
    return np.concatenate(out)[:n]


MAX_ANGLE = math.radians(70.0)
MIN_ANGLE = math.radians(20.0)


def _child_direction(d: np.ndarray, target: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Unit vector towards ``target``, its angle to ``d`` kept within 20..70 degrees."""
    v = _unit(target)
    perp = v - np.dot(v, d) * d
    if np.linalg.norm(perp) < 1e-6:
        perp = fallback
    perp = _unit(perp)
    angle = min(max(math.acos(float(np.clip(np.dot(v, d), -1.0, 1.0))), MIN_ANGLE), MAX_ANGLE)
    return _unit(math.cos(angle) * d + math.sin(angle) * perp)


def grow_tree(
    chest: Chest,
    rng: np.random.Generator,
    generations: int,
    min_radius_mm: float,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> Tree:
    """Grow the bronchial tree breadth-first (a parent's id is smaller than its children's).

    Down to the segmental bronchi the tree follows textbook anatomy with
    per-seed variants and jitter (:mod:`core.phantom.anatomy`), every branch
    named. Below each segmental bronchus it fills the segment's territory (the
    lung points nearest its end) like Tawhai et al.'s space-filling algorithm
    (J Appl Physiol 2000): each branch supplies a cloud of lung points; at its
    end the cloud is cut in two through its centroid across its widest spread
    (perpendicular to the branch), each child heads for its half's centroid
    (angle kept in 20..70 deg) and covers 40% of the way (kept within 2.5..4
    diameters: airway L/D ~ 3), and its radius follows Murray's law from the
    share of the territory it supplies (r_child = r * share^(1/3), kept within
    0.55..0.92 of the parent). These children have no name.
    ``box`` (low, high corners, world mm) is the field of view: the trachea
    starts no higher than its top, and only branches that end inside it get
    children, so the part of the tree that is imaged stays one piece. A named
    branch that is not grown (thinner than ``min_radius_mm``, below
    ``generations``, beyond the field of view, or under one of those) is listed
    in ``Tree.not_grown`` with the reason; its territory is not supplied by
    another branch, as a bronchus too thin to image is simply not seen.
    """
    carina = np.asarray(chest.carina, dtype=float)
    top = carina[2] + chest.trachea_length
    if box is not None:
        top = min(top, float(box[1][2]))
    tilt = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), 1.0])
    t_dir = _unit(tilt)
    t_start = carina + t_dir * (top - carina[2]) / t_dir[2]
    r0 = chest.trachea_radius
    trachea = Branch(0, -1, 0, tuple(t_start), tuple(carina), r0, wall_thickness(r0), "", "Trachea")
    branches: list[Branch] = [trachea]
    normals: dict[int, np.ndarray] = {}
    queue: list[_Grow] = []
    n_points = int(min(200_000, max(3000, 6 * 2**generations)))

    centres = {side: np.asarray(chest.lungs[i].centre, dtype=float) for i, side in enumerate("RL")}
    placed, variants = layout(chest.lung_depth, centres, rng, carina, t_dir, r0)
    kids: dict[str, list[Placed]] = {}
    for p in placed:
        kids.setdefault(p.parent, []).append(p)
    # each segmental bronchus (a leaf of the template) supplies the lung points nearest its end
    territory: dict[str, np.ndarray] = {}
    for side in ("R", "L"):
        pts = lung_points(chest, side, n_points, rng)
        leaves = [p for p in placed if p.side == side and p.key not in kids]
        for p, part in zip(leaves, assign_territory(leaves, pts, chest.lung_depth)):
            territory[p.key] = part
            if len(part):  # Tawhai: 40 % of the way to the territory's centroid, within 1..1.5 x its textbook length
                length = float(np.linalg.norm(p.end - p.start))
                reach = 0.4 * float(np.linalg.norm(part.mean(axis=0) - p.start))
                for f in (min(max(reach, length), 1.5 * length) / length, 1.0):
                    end = p.start + p.direction * length * f
                    if f == 1.0 or float(chest.lung_depth(end, side, p.radius_mm)) > 0:
                        placed[placed.index(p)] = replace(p, end=end)
                        break
    kids = {}
    for p in placed:
        kids.setdefault(p.parent, []).append(p)
    not_grown: dict[str, str] = {}

    def skip(p: Placed, why: str) -> None:
        if p.name:  # an unnamed stem passes its reason on to the named bronchi below it
            not_grown[p.name] = why
        for c in kids.get(p.key, []):
            skip(c, f"under {p.name}, not grown" if p.name else why)

    def inside_box(p: np.ndarray) -> bool:
        return box is None or bool(np.all(p >= box[0]) and np.all(p <= box[1]))

    def add(
        parent: Branch,
        direction: np.ndarray,
        length: float,
        radius: float,
        side: str,
        ref: np.ndarray,
        pts: np.ndarray,
        name: str = "",
        key: str = "",
    ) -> None:
        start = np.asarray(parent.end)
        end = start + direction * length
        b = Branch(
            len(branches),
            parent.id,
            parent.generation + 1,
            tuple(start),
            tuple(end),
            radius,
            wall_thickness(radius),
            side,
            name,
        )
        branches.append(b)
        queue.append(_Grow(b, _perp(ref, direction), pts, key))

    queue.append(_Grow(trachea, _perp(np.array([-1.0, 0.0, 0.0]), t_dir), np.zeros((0, 3)), "Trachea"))
    while queue:
        g = queue.pop(0)
        b, pts = g.branch, g.points
        d = b.direction
        start = np.asarray(b.end)
        named_kids = kids.get(g.key, []) if g.key else []
        if named_kids:
            spread = sum((p.direction for p in named_kids), np.zeros(3)) - len(named_kids) * d
            normals[b.id] = _unit(
                np.cross(d, _perp(named_kids[0].direction if np.linalg.norm(spread) < 1e-6 else spread, d))
            )
            for p in named_kids:
                if b.generation >= generations:
                    skip(p, f"below --generations {generations}")
                elif not inside_box(start):
                    skip(p, "outside the field of view")
                elif p.radius_mm < min_radius_mm:
                    skip(p, f"thinner ({2 * p.radius_mm:.1f} mm) than the grid resolves")
                else:
                    length = float(np.linalg.norm(p.end - p.start))
                    ref = _perp(d, p.direction)
                    add(
                        b,
                        p.direction,
                        length,
                        p.radius_mm,
                        p.side,
                        ref,
                        territory.get(p.key, np.zeros((0, 3))),
                        p.name,
                        p.key,
                    )
            continue
        if g.key and not is_segmental(b.name) and g.key not in territory:
            normals[b.id] = _unit(np.cross(d, g.ref))
            continue  # a named branch whose named children were all left out: nothing grows in their place
        if b.generation >= generations or len(pts) < 2 or not inside_box(start):
            normals[b.id] = _unit(np.cross(d, g.ref))
            continue
        centred = pts - pts.mean(axis=0)
        flat = centred - np.outer(centred @ d, d)
        _, vecs = np.linalg.eigh(flat.T @ flat)
        u = vecs[:, -1]  # widest spread of the territory across the branch
        if abs(np.dot(u, d)) > 0.99:
            u = g.ref
        normals[b.id] = _unit(np.cross(d, u))
        side_of = centred @ u >= 0
        for part in (pts[side_of], pts[~side_of]):
            if len(part) == 0:
                continue
            share = len(part) / len(pts)
            radius = b.radius_mm * float(np.clip(share ** (1.0 / 3.0), 0.55, 0.92))
            if radius < min_radius_mm:
                continue
            to_c = part.mean(axis=0) - start
            direction = _child_direction(d, to_c, u if np.dot(to_c, u) >= 0 else -u)
            length = float(np.clip(0.4 * np.linalg.norm(to_c), 5.0 * radius, 8.0 * radius))
            length *= rng.uniform(0.85, 1.15)
            margin = radius + wall_thickness(radius)
            if float(chest.lung_depth(start + direction * length, b.side, margin)) <= 0:
                length *= 0.5  # a shorter child before giving up on it
                if float(chest.lung_depth(start + direction * length, b.side, margin)) <= 0:
                    continue
            add(b, direction, length, radius, b.side, u, part)
    return Tree(branches, [normals[b.id] for b in branches], variants, not_grown)
