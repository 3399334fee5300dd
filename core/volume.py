"""Volumes that carry their geometry.

Arrays are indexed ``(z, y, x)``. Geometry follows ITK/SimpleITK conventions so
that values read from a file print as the file's own tools print them:
``spacing`` and ``origin`` are ``(x, y, z)`` in millimetres and ``direction`` is
the row-major 3x3 matrix whose *columns* are the world directions of the x, y
and z index axes (LPS world, as ITK). ``spacing_zyx`` gives the spacing in array
order for distance transforms and the like.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from core.errors import GeometryError, InputError

Vec3 = tuple[float, float, float]
Mat3 = tuple[float, float, float, float, float, float, float, float, float]

IDENTITY: Mat3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def vec3(values: Iterable[float] | np.ndarray) -> Vec3:
    """Three floats (spacing or origin) from any sequence or array of three numbers."""
    v = [float(x) for x in np.asarray(values, dtype=float).ravel()]
    if len(v) != 3:
        raise InputError(f"Expected 3 values (x, y, z), got {len(v)}.")
    return (v[0], v[1], v[2])


def mat3(values: Iterable[float] | np.ndarray) -> Mat3:
    """A row-major 3x3 direction from any sequence of nine numbers or a 3x3 array."""
    v = [float(x) for x in np.asarray(values, dtype=float).ravel()]
    if len(v) != 9:
        raise InputError(f"Expected a 3x3 direction (9 values), got {len(v)}.")
    return (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8])


# Letters of the LPS world axes, +direction first (ITK's "RAI" code naming is
# confusing; we print the letter each index axis points *towards*).
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


@dataclass(frozen=True)
class Geometry:
    spacing: Vec3 = (1.0, 1.0, 1.0)
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: Mat3 = IDENTITY

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in np.asarray(self.direction).ravel()))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise InputError("Geometry needs 3 spacings, 3 origin values and a 3x3 direction.")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise InputError(f"Spacing {self.spacing} is not positive.", "Fix the file's header (pixel spacing).")

    # -- array-order helpers -------------------------------------------------
    @property
    def spacing_zyx(self) -> Vec3:
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_world(self, zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Array index(es) ``(..., 3)`` in (z, y, x) order -> world points (x, y, z) in mm."""
        idx = np.asarray(zyx, dtype=float)[..., ::-1]  # to (x, y, z)
        world: np.ndarray = np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction_matrix.T
        return world

    def world_to_index(self, xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """World points (x, y, z) in mm -> continuous array indices in (z, y, x) order."""
        p = np.asarray(xyz, dtype=float) - np.asarray(self.origin)
        idx: np.ndarray = (p @ np.linalg.inv(self.direction_matrix).T) / np.asarray(self.spacing)
        return idx[..., ::-1]

    def orientation_code(self) -> str:
        """Three letters: where the x, y and z index axes point (e.g. 'LPS' for identity)."""
        m = self.direction_matrix
        code = ""
        for col in range(3):
            v = m[:, col]
            world = int(np.argmax(np.abs(v)))
            code += _AXIS_LETTERS[world][0 if v[world] > 0 else 1]
        return code

    def matches(self, other: Geometry, tol: float = 1e-3) -> bool:
        """Same grid within ``tol`` (relative for spacing, mm for origin, absolute for cosines)."""
        sp = np.allclose(self.spacing, other.spacing, rtol=tol, atol=0)
        org = np.allclose(self.origin, other.origin, atol=max(tol, tol * max(self.spacing)))
        dr = np.allclose(self.direction, other.direction, atol=tol)
        return bool(sp and org and dr)

    def describe(self) -> str:
        sp = ", ".join(f"{v:.4g}" for v in self.spacing)
        og = ", ".join(f"{v:.4g}" for v in self.origin)
        return f"spacing ({sp}) mm, origin ({og}) mm, orientation {self.orientation_code()}"

    def to_dict(self) -> dict[str, list[float]]:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Geometry:
        return cls(vec3(d["spacing"]), vec3(d["origin"]), mat3(d["direction"]))


@dataclass
class _Volume:
    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            where = f" ({self.name})" if self.name else ""
            raise InputError(
                f"Expected a 3D volume{where}, got an array of shape {self.array.shape}.",
                "Give a 3D image (a NIfTI/MHA/NRRD volume or a DICOM series folder), not a single slice.",
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing_zyx(self) -> Vec3:
        return self.geometry.spacing_zyx

    def with_array(self, array: np.ndarray, name: str | None = None) -> Self:
        """Same geometry, another array of the same shape."""
        if array.shape != self.array.shape:
            raise GeometryError(f"Array shape {array.shape} differs from the volume's {self.array.shape}.")
        return dataclasses.replace(self, array=array, name=self.name if name is None else name)


@dataclass
class IntensityVolume(_Volume):
    """A CT (or any scalar image), values in HU for CT."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.array.dtype.kind == "f" and not np.isfinite(self.array).all():
            bad = int((~np.isfinite(self.array)).sum())
            raise InputError(
                f"The image{' ' + self.name if self.name else ''} has {bad} NaN or infinite voxels.",
                "Replace them (e.g. with -1024 HU) before loading.",
            )


@dataclass
class LabelVolume(_Volume):
    """A binary airway mask (bool) or an integer label map."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.array.dtype.kind == "f":
            if not np.isfinite(self.array).all():
                raise InputError(
                    f"The label{' ' + self.name if self.name else ''} has NaN values.", "Use an integer label map."
                )

    @property
    def mask(self) -> np.ndarray:
        return self.array if self.array.dtype == bool else self.array != 0

    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.array))


@dataclass(frozen=True)
class LabelSelector:
    """Which values of a label map are airway.

    ``mode``: ``"nonzero"`` (default), ``"value"`` (== value) or ``"bits"``
    (``(v >> shift) == value``, e.g. CIP maps: shift 8, value 2).
    Written as text: ``nonzero``, ``value:3``, ``bits:8:2``.
    """

    mode: str = "nonzero"
    value: int = 1
    shift: int = 0

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if text is None or text == "" or text == "nonzero":
            return cls()
        parts = text.split(":")
        try:
            if parts[0] == "value" and len(parts) == 2:
                return cls("value", int(parts[1]))
            if parts[0] == "bits" and len(parts) == 3:
                return cls("bits", int(parts[2]), int(parts[1]))
        except ValueError:
            pass
        raise InputError(
            f"Unknown label selector '{text}'.",
            "Use 'nonzero', 'value:N' (voxels equal to N) or 'bits:SHIFT:N' ((v >> SHIFT) == N, e.g. bits:8:2 for CIP maps).",
        )

    def __str__(self) -> str:
        if self.mode == "value":
            return f"value:{self.value}"
        if self.mode == "bits":
            return f"bits:{self.shift}:{self.value}"
        return "nonzero"

    def apply(self, array: np.ndarray) -> np.ndarray:
        selected: np.ndarray
        if self.mode == "value":
            selected = array == self.value
        elif self.mode == "bits":
            selected = (array.astype(np.int64, copy=False) >> self.shift) == self.value
        else:
            selected = array != 0
        return selected


def check_same_grid(a: _Volume, b: _Volume, tol: float = 1e-3) -> None:
    """Raise :class:`GeometryError` naming both grids when ``a`` and ``b`` differ."""
    if a.shape != b.shape or not a.geometry.matches(b.geometry, tol):
        na, nb = a.name or "first volume", b.name or "second volume"
        raise GeometryError(
            f"{na} and {nb} are not on the same grid: {na} has shape {a.shape}, {a.geometry.describe()}; "
            f"{nb} has shape {b.shape}, {b.geometry.describe()}",
            "Use the label made for this CT, or resample it onto the CT grid explicitly (nearest neighbour): "
            "--resample-to-ct in airway evaluate and airway segment, or accept resampling when the app asks.",
        )


# -- display orientation -------------------------------------------------------


@dataclass(frozen=True)
class Reorientation:
    """How an array was permuted/flipped to canonical orientation, so it can be undone."""

    axes: tuple[int, int, int]  # new array axis i takes old axis axes[i]
    flips: tuple[bool, bool, bool]  # flip applied along each *new* axis

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        for ax, f in enumerate(self.flips):
            if f:
                out = np.flip(out, axis=ax)
        return out

    def invert(self, array: np.ndarray) -> np.ndarray:
        out = array
        for ax, f in enumerate(self.flips):
            if f:
                out = np.flip(out, axis=ax)
        return np.transpose(out, np.argsort(self.axes))

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)


def canonical_reorientation(geometry: Geometry, shape: Sequence[int]) -> tuple[Reorientation, Geometry]:
    """Permutation and flips that bring an array to LPS (x->left, y->posterior, z->superior).

    Whatever the file's direction cosines, after this every volume is shown the
    same way: axial slices seen from the feet with the patient's right on the
    screen's left, as radiologists expect.
    """
    m = geometry.direction_matrix
    # world axis that each index axis (x, y, z) mostly follows
    world_of_index = [int(np.argmax(np.abs(m[:, c]))) for c in range(3)]
    if sorted(world_of_index) != [0, 1, 2]:  # oblique ties: fall back to a greedy unique assignment
        used: set[int] = set()
        world_of_index = []
        for c in range(3):
            order = np.argsort(-np.abs(m[:, c]))
            w = next(int(o) for o in order if int(o) not in used)
            used.add(w)
            world_of_index.append(w)
    # index axis (x, y, z order) that should become new x, y, z
    index_for_world = [world_of_index.index(w) for w in range(3)]
    # in array order: new array axis (z, y, x) <- old array axis
    axes_zyx = tuple(2 - index_for_world[2 - i] for i in range(3))
    flips_xyz = [bool(m[w, index_for_world[w]] < 0) for w in range(3)]
    flips_zyx = (flips_xyz[2], flips_xyz[1], flips_xyz[0])
    reo = Reorientation(axes_zyx, flips_zyx)  # type: ignore[arg-type]

    sp = [geometry.spacing[index_for_world[w]] for w in range(3)]
    new_dir = np.zeros((3, 3))
    origin = np.asarray(geometry.origin, dtype=float)
    for w in range(3):
        c = index_for_world[w]
        col = m[:, c].copy()
        if flips_xyz[w]:
            # the old last index along this axis becomes index 0
            n = shape[2 - c]
            origin = origin + col * geometry.spacing[c] * (n - 1)
            col = -col
        new_dir[:, w] = col
    return reo, Geometry(vec3(sp), vec3(origin), mat3(new_dir))


def to_canonical(volume: _Volume) -> tuple[_Volume, Reorientation]:
    """A view of ``volume`` in canonical (LPS) orientation and the transform used."""
    reo, geo = canonical_reorientation(volume.geometry, volume.shape)
    if reo.is_identity:
        return volume, reo
    arr = np.ascontiguousarray(reo.apply(volume.array))
    return dataclasses.replace(volume, array=arr, geometry=geo), reo
