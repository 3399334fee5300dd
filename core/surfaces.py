"""Airway surfaces for the 3D view: label maps -> triangle meshes in world mm.

Surfaces are extracted with VTK's surface nets (``vtkSurfaceNets3D``, driven
directly rather than through pyvista's slower ``contour_labels`` wrapper) on
the bounding box of the labels only,
so a full-size CT costs what its airway tree costs. One pass handles any number
of labels: every face carries the ``label`` of the region it bounds, and the
3D view colours faces through a lookup table (TP/FP/FN, branch generation,
detected/missed branch, one colour per error component).

Headless: pyvista/VTK and numpy only, never Qt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.box import Box, bounding_box
from core.errors import Cancelled, GeometryError, InputError
from core.progress import Cancellable as CancelLike
from core.progress import Progress
from core.volume import Geometry

if TYPE_CHECKING:  # pyvista (VTK) loads on first use: the module imports without it
    import pyvista as pv

# Outcome classes of a prediction voxel against the reference (values of
# :func:`outcome_labels`); the 3D view and the slice overlay share them.
BACKGROUND, TP, FP, FN = 0, 1, 2, 3
OUTCOME_NAMES = {TP: "TP", FP: "FP", FN: "FN"}


_MESSAGE = "Building 3D surfaces"  # what a status bar shows while a mesh is made


def outcome_labels(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """uint8 map: 0 background, 1 TP (both), 2 FP (prediction only), 3 FN (reference only)."""
    if prediction.shape != reference.shape:
        raise GeometryError(
            f"Prediction shape {prediction.shape} differs from the reference's {reference.shape}.",
            "Use a prediction made for this CT, or resample it onto the reference grid.",
        )
    p = prediction if prediction.dtype == bool else prediction != 0
    r = reference if reference.dtype == bool else reference != 0
    # TP=1, FP=2, FN=3 from two bits without branches: p + 2*r gives 1=FP-only, 2=FN-only, 3=TP
    code = p.astype(np.uint8) + 2 * r.astype(np.uint8)
    return np.array([BACKGROUND, FP, FN, TP], dtype=np.uint8)[code]


def relabel(labels: np.ndarray, mapping: Mapping[int, int], default: int = 0) -> np.ndarray:
    """Map label values through ``mapping`` (missing values -> ``default``, 0 stays 0), vectorised.

    Used to colour a branch-id map by generation or by detected/missed.
    """
    if labels.size == 0:
        return labels.astype(np.int32)
    top = int(labels.max())
    if int(labels.min()) < 0:
        raise InputError("Label maps for surfaces must be non-negative.")
    lut = np.full(top + 1, default, dtype=np.int32)
    for k, v in mapping.items():
        if 0 <= int(k) <= top:
            lut[int(k)] = int(v)
    lut[0] = 0
    out: np.ndarray = lut[labels]
    return out


def labels_surface(
    labels: np.ndarray,
    geometry: Geometry,
    *,
    smoothing: bool = True,
    smoothing_iterations: int = 16,
    box: Box | None = None,
    offset: Sequence[int] = (0, 0, 0),
    progress: Progress | None = None,
    cancel: CancelLike | None = None,
) -> pv.PolyData:
    """Outer surface of every non-zero label, as one ``pyvista.PolyData`` in world mm.

    ``labels`` may be a crop of the volume whose first voxel is at index
    ``offset`` (z, y, x); ``geometry`` is always the full volume's.

    Faces carry ``cell_data['label']`` (int32): the label of the region they
    bound. Only faces between a label and the background are kept, so a TP/FP/FN
    map gives one closed-looking airway skin coloured by outcome, not the inner
    walls between classes. An empty map gives an empty PolyData.
    """
    import pyvista as pv
    from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D

    if labels.ndim != 3:
        raise InputError(f"Expected a 3D label map, got shape {labels.shape}.")
    if progress:
        progress(0, 3, _MESSAGE)
    box = box if box is not None else bounding_box(labels)
    if box is None:
        if progress:
            progress(3, 3, _MESSAGE)
        return pv.PolyData()
    if labels.dtype == bool:
        crop = labels[box.slices].astype(np.uint8)
    elif labels.dtype.kind in "iu":
        crop = labels[box.slices]
        top = int(crop.max())
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
        crop = crop.astype(dtype, copy=False)
    else:
        raise InputError(f"Label maps must be integer or bool, not {labels.dtype}.", "Threshold probabilities first.")
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    if progress:
        progress(1, 3, _MESSAGE)

    top = int(crop.max())
    # one voxel of background around the crop closes surfaces that touch it
    crop = np.pad(crop, 1)
    nz, ny, nx = crop.shape
    image = pv.ImageData(dimensions=(nx, ny, nz))
    # index-space grid (spacing 1, origin = padded box corner in x, y, z): the
    # world transform is applied afterwards with the full direction matrix.
    corner = np.asarray(box.start) + np.asarray(offset) - 1.0
    image.origin = (corner[2], corner[1], corner[0])
    image.point_data["labels"] = crop.ravel(order="C")
    image.point_data.active_scalars_name = "labels"

    # vtkSurfaceNets3D directly: pyvista's contour_labels wrapper adds about
    # 10x its run time in post-processing (benchmarks/bench_surfaces.py).
    nets = vtkSurfaceNets3D()
    nets.SetInputData(image)
    nets.SetBackgroundLabel(0)
    # every value 1..top (absent ones cost nothing); np.unique would sort the crop
    nets.GenerateLabels(top, 1, top)
    nets.SetOutputMeshTypeToTriangles()
    nets.SetSmoothing(bool(smoothing))
    if smoothing:
        nets.GetSmoother().SetNumberOfIterations(int(smoothing_iterations))
    nets.Update()
    surface = pv.wrap(nets.GetOutput())
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    if progress:
        progress(2, 3, _MESSAGE)
    if surface.n_points == 0:
        if progress:
            progress(3, 3, _MESSAGE)
        return pv.PolyData()
    bl = np.asarray(surface.cell_data["BoundaryLabels"]).reshape(surface.n_cells, -1)
    # keep label|background faces only (the skin, not the inner walls between
    # classes); VTK puts the background second. Filtered here in numpy because
    # the filter's own boundary style is deprecated in VTK 9.7.
    skin = bl[:, -1] == 0
    faces = np.asarray(surface.faces).reshape(-1, 4)[skin]
    face_label = bl[skin, 0].astype(np.int32)
    surface = pv.PolyData(np.asarray(surface.points).copy(), faces.ravel())
    surface.cell_data["label"] = face_label
    surface.points = index_xyz_to_world(np.asarray(surface.points, dtype=float), geometry)
    if progress:
        progress(3, 3, _MESSAGE)
    return surface


def mask_surface(mask: np.ndarray, geometry: Geometry, **kwargs: Any) -> pv.PolyData:
    """Surface of a binary mask (``label`` 1 on every face)."""
    m = mask if mask.dtype == bool else mask != 0
    return labels_surface(m, geometry, **kwargs)


def outcome_surface(prediction: np.ndarray, reference: np.ndarray, geometry: Geometry, **kwargs: Any) -> pv.PolyData:
    """Skin of prediction ∪ reference, faces labelled TP (1), FP (2) or FN (3)."""
    if prediction.shape != reference.shape:
        outcome_labels(prediction, reference)  # raises the geometry error
    # classify inside the union of the two boxes only: a full-size volume
    # would otherwise cost several volume-sized temporaries
    boxes = [b for b in (bounding_box(prediction), bounding_box(reference)) if b is not None]
    if not boxes:
        return labels_surface(np.zeros((1, 1, 1), np.uint8), geometry, **kwargs)
    union = boxes[0].union(boxes[-1])
    crop = outcome_labels(prediction[union.slices], reference[union.slices])
    return labels_surface(crop, geometry, offset=union.start, **kwargs)


def components_surface(
    masks: Sequence[tuple[Box | None, np.ndarray]] | None = None,
    *,
    shape: tuple[int, int, int] | None = None,
    component_map: np.ndarray | None = None,
    geometry: Geometry,
    **kwargs: Any,
) -> pv.PolyData:
    """One surface for many error components, each face labelled with its component number.

    Either ``component_map`` (0 background, k = component k) or a list of
    ``(box, mask)`` pairs (mask of the box's shape, or of the full ``shape``
    when box is None), numbered 1.. in list order.
    """
    if component_map is None:
        if shape is None or masks is None:
            raise InputError("components_surface needs either component_map, or masks and the volume shape.")
        top = len(masks)
        component_map = np.zeros(shape, dtype=np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)
        for k, (box, m) in enumerate(masks, start=1):
            target = component_map if box is None else component_map[box.slices]
            target[m.astype(bool, copy=False)] = k
    return labels_surface(component_map, geometry, **kwargs)


def index_xyz_to_world(points_xyz: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Continuous (x, y, z) index points -> world (x, y, z) mm: origin + D @ (spacing * index)."""
    world: np.ndarray = (
        np.asarray(geometry.origin) + (points_xyz * np.asarray(geometry.spacing)) @ geometry.direction_matrix.T
    )
    return world


def world_to_voxel(
    point_xyz: Sequence[float] | np.ndarray,
    geometry: Geometry,
    shape: tuple[int, int, int],
    mask: np.ndarray | None = None,
    radius: int = 2,
) -> tuple[int, int, int]:
    """The voxel (z, y, x) under a world point picked on a surface.

    A point on an airway surface lies half a voxel from the voxels it bounds,
    so rounding alone may land outside the airway; with ``mask`` the nearest
    (in mm) mask voxel within ``radius`` voxels is returned instead, when any.
    The result is clamped into the volume.
    """
    idx = geometry.world_to_index(np.asarray(point_xyz, dtype=float))
    voxel = np.clip(np.rint(idx).astype(int), 0, np.asarray(shape) - 1)
    if mask is None:
        return _zyx(voxel)
    lo = np.maximum(voxel - radius, 0)
    hi = np.minimum(voxel + radius + 1, np.asarray(shape))
    window = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    hits = np.argwhere(window)
    if hits.size == 0:
        return _zyx(voxel)
    d = ((hits + lo - idx) * np.asarray(geometry.spacing_zyx)) ** 2
    best = hits[int(np.argmin(d.sum(axis=1)))] + lo
    return _zyx(best)


def _zyx(index: np.ndarray) -> tuple[int, int, int]:
    z, y, x = (int(v) for v in index)
    return z, y, x


def select_faces(surface: pv.PolyData, labels: Sequence[int]) -> pv.PolyData:
    """The faces of ``surface`` whose ``label`` is in ``labels``, as a new PolyData (points shared, not pruned).

    Lets the 3D view draw error components as their own actors (opaque) over
    a see-through TP skin without extracting surfaces twice.
    """
    import pyvista as pv

    if surface.n_cells == 0:
        return pv.PolyData()
    lab = np.asarray(surface.cell_data["label"])
    keep = np.isin(lab, np.asarray(list(labels)))
    if not keep.any():
        return pv.PolyData()
    faces = np.asarray(surface.faces).reshape(-1, 4)
    if faces.shape[0] != surface.n_cells or not np.all(faces[:, 0] == 3):
        # a list of ints: what pyvista's stubs take (this path is for meshes that are not all triangles)
        extracted: pv.PolyData = surface.extract_cells(np.flatnonzero(keep).tolist()).extract_surface()
        return extracted
    out = pv.PolyData(np.asarray(surface.points), faces[keep].ravel())
    out.cell_data["label"] = lab[keep]
    for name in surface.point_data.keys():  # same points: per-point arrays (normals) carry over
        out.point_data[name] = surface.point_data[name]
    if surface.point_data.active_normals_name:
        out.point_data.active_normals_name = surface.point_data.active_normals_name
    return out
