"""Preprocess each case once into a memory-mappable cache (``airway prepare``).

One folder per case under the cache root::

    CACHE/<case>/meta.json      source fingerprint, settings, geometry of the crop, counts
    CACHE/<case>/image.npy      float32, HU windowed and scaled, cropped (core.preprocess)
    CACHE/<case>/label.npy      uint8 airway mask, same crop
    CACHE/<case>/skeleton.npy   uint8 centreline (skimage skeletonize, method.md sec. 4)
    CACHE/<case>/small.npy      uint8 small-airway mask (local diameter < small_diameter_mm)
    CACHE/<case>/weights_a<alpha>.npy  float32 distance weights (eq. 15, m = 1 - alpha) per GUL alpha

Arrays are read back with ``np.load(mmap_mode="r")`` so that DataLoader
workers share the page cache instead of copying volumes. A case is rebuilt when
its source files change (size + modification time) or when the settings that
shape the cache change; otherwise it is reused across runs. The source
fingerprint holds a content hash of the files, so a file replaced with one of
the same size and time is still noticed (the grid lives in the file's header,
so it is covered too). Each case is built
in a temporary folder and moved into place, so an interrupted ``prepare`` never
leaves a half-written case behind.

The stage-0 false-negative centrelines depend on a model, not only on the data,
so they live in the run folder (``RUN/hard/<case>.npy``), not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import AirwayError, GeometryError, InputError
from core.progress import Cancellable, Progress, raise_if_cancelled
from core.training.dataset import CaseFiles

CACHE_VERSION = 1

if TYPE_CHECKING:
    from core.volume import Geometry, IntensityVolume, LabelVolume


@dataclass(frozen=True)
class CacheSettings:
    """Everything that changes what the cache holds (hashed into each case's meta)."""

    preprocessing: dict[str, Any]
    label_selector: str = "nonzero"
    alphas: tuple[float, ...] = (0.1, 0.2)
    small_diameter_mm: float = 2.0
    r_d: float = 0.5
    ignore_value: int = 0

    def key(self) -> str:
        fields = {
            "v": CACHE_VERSION,
            "prep": self.preprocessing,
            "sel": self.label_selector,
            "alphas": sorted(round(a, 6) for a in self.alphas),
            "small": self.small_diameter_mm,
            "r_d": self.r_d,
        }
        if self.ignore_value:  # only when used, so caches made without it stay fresh
            fields["ignore"] = int(self.ignore_value)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CachedCase:
    """A prepared case: arrays open as read-only memory maps."""

    name: str
    folder: Path
    meta: dict[str, Any]

    def array(self, what: str) -> np.ndarray:
        out: np.ndarray = np.load(self.folder / f"{what}.npy", mmap_mode="r")
        return out

    @property
    def image(self) -> np.ndarray:
        return self.array("image")

    @property
    def label(self) -> np.ndarray:
        return self.array("label")

    @property
    def skeleton(self) -> np.ndarray:
        return self.array("skeleton")

    @property
    def small(self) -> np.ndarray:
        return self.array("small")

    def weights(self, alpha: float) -> np.ndarray:
        return self.array(_weights_name(alpha))

    @property
    def ignore(self) -> np.ndarray | None:
        """Voxels the losses leave out (uint8), or None when the dataset has no ignore label."""
        return self.array("ignore") if (self.folder / "ignore.npy").is_file() else None

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        z, y, x = self.meta["spacing_zyx"]
        return float(z), float(y), float(x)

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.meta["shape"]
        return int(z), int(y), int(x)

    @property
    def full_shape(self) -> tuple[int, int, int]:
        """The CT's shape before the lung crop (what a user gives the model)."""
        z, y, x = self.meta.get("full_shape") or self.meta["shape"]
        return int(z), int(y), int(x)

    def geometry(self) -> Geometry:
        from core.volume import Geometry

        return Geometry.from_dict(self.meta["geometry"])

    def ct_volume(self) -> IntensityVolume:
        """The cropped CT in HU, rebuilt from the windowed image (for whole-case validation).

        Values outside the window come back clamped to it, which the same
        windowing maps to the same network input, so predictions are unchanged.
        """
        from core.volume import IntensityVolume

        lo, hi = self.meta["preprocessing"]["window"]
        scale = float(self.meta["preprocessing"]["scale"])
        hu = np.asarray(self.image, dtype=np.float32) * np.float32((hi - lo) / scale) + np.float32(lo)
        return IntensityVolume(hu, self.geometry(), name=self.name)


@dataclass
class BadCase:
    name: str
    reason: str


@dataclass
class PrepareReport:
    cases: list[CachedCase] = field(default_factory=list)
    bad: list[BadCase] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def _weights_name(alpha: float) -> str:
    return f"weights_a{alpha:g}"


def _digest(files: list[Path]) -> str:
    """Content hash of the source files: size and time alone miss a file replaced by ``cp -p`` or a restore."""
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _source_fingerprint(case: CaseFiles) -> dict[str, Any]:
    def one(p: Path | None) -> dict[str, Any] | None:
        if p is None:
            return None
        if p.is_dir():  # DICOM folder: every file counts
            files = sorted(f for f in p.iterdir() if f.is_file())
            return {
                "path": str(p.resolve()),
                "size": sum(f.stat().st_size for f in files),
                "mtime_ns": max((f.stat().st_mtime_ns for f in files), default=0),
                "n": len(files),
                "content": _digest(files),
            }
        st = p.stat()
        return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "content": _digest([p])}

    return {"image": one(case.image), "label": one(case.label)}


def small_airway_mask(
    label: np.ndarray, skeleton: np.ndarray, spacing_zyx: tuple[float, float, float], max_diameter_mm: float
) -> np.ndarray:
    """Airway voxels whose nearest centreline voxel has a local diameter below ``max_diameter_mm``.

    Local diameter at a centreline voxel = 2 x its Euclidean distance (mm) to the
    background, as in the authors' small-airway sampling.
    """
    from scipy import ndimage

    label = label.astype(bool, copy=False)
    if not label.any():
        return np.zeros(label.shape, bool)
    skel = skeleton.astype(bool, copy=False)
    if not skel.any():
        skel = label
    import edt

    radius = edt.edt(label, anisotropy=tuple(float(s) for s in spacing_zyx))
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(label))
    idx = ndimage.distance_transform_edt(~skel[box], sampling=spacing_zyx, return_distances=False, return_indices=True)
    local_r = radius[box][tuple(idx)]
    out = np.zeros(label.shape, bool)
    out[box] = label[box] & (2.0 * local_r < max_diameter_mm)
    return out


def _load_case(case: CaseFiles, settings: CacheSettings) -> tuple[IntensityVolume, LabelVolume, np.ndarray | None]:
    from core.io import read_ct, read_label

    if case.label is None:
        raise InputError(
            "no label file found for this image", "Add the label to labelsTr/ with the same name (or without _0000)."
        )
    try:
        ct = read_ct(case.image)
    except AirwayError as exc:
        raise InputError(f"unreadable image: {exc}") from None
    try:
        label = read_label(case.label, settings.label_selector)
    except AirwayError as exc:
        raise InputError(f"unreadable label: {exc}") from None
    if label.shape != ct.shape or not ct.geometry.matches(label.geometry):
        raise GeometryError(
            f"label and image are on different grids (image {ct.shape}, {ct.geometry.describe()}; "
            f"label {label.shape}, {label.geometry.describe()})",
            "Use the label made for this CT, or resample it onto the CT grid first.",
        )
    ignore = None
    if settings.ignore_value:
        from core.io import read_volume
        from core.volume import LabelVolume

        ignore = np.asarray(read_volume(case.label).array) == settings.ignore_value
        label = LabelVolume(label.mask & ~ignore, label.geometry, label.name)
    # a pseudo-label with ignored voxels and no airway is a real negative (abdomen, lower thorax):
    # what it does not ignore is trusted background, the lesson a phantom-only model lacks
    if not label.mask.any() and not (ignore is not None and ignore.any()):
        raise InputError(
            f"the label is empty (no voxel matches '{settings.label_selector}')",
            "Check the file or the label selector (data.label_selector).",
        )
    return ct, label, ignore


def build_case(case: CaseFiles, settings: CacheSettings, folder: Path) -> CachedCase:
    """Preprocess one case into ``folder`` (created atomically); raises AirwayError for a bad case."""
    from skimage.morphology import skeletonize

    from core.preprocess import Preprocessing, crop_box_for, window_hu
    from core.weights import distance_weights

    ct, label, ignore = _load_case(case, settings)
    prep = Preprocessing.from_dict(settings.preprocessing)
    box = crop_box_for(ct, prep)
    mask = box.crop(label.mask)
    if mask.sum() < label.mask.sum():
        # the lung crop cut airway voxels off (e.g. the trachea above the lungs): keep them all
        from core.preprocess import CropBox

        lab_box = CropBox.from_mask(label.mask, prep.margin)
        box = CropBox.from_box(box.box.union(lab_box.box), box.full_shape)
        mask = box.crop(label.mask)
    image = window_hu(box.crop(ct.array), prep.window, prep.scale)
    spacing = ct.geometry.spacing_zyx
    skeleton = np.asarray(skeletonize(mask)).astype(bool)  # type: ignore[no-untyped-call]  # skimage is untyped
    small = small_airway_mask(mask, skeleton, spacing, settings.small_diameter_mm)
    origin = ct.geometry.index_to_world(np.asarray(box.start, float))
    from core.volume import Geometry

    ox, oy, oz = (float(v) for v in origin)
    geo = Geometry(ct.geometry.spacing, (ox, oy, oz), ct.geometry.direction)

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "image.npy", np.ascontiguousarray(image, dtype=np.float32))
        np.save(tmp / "label.npy", mask.astype(np.uint8))
        np.save(tmp / "skeleton.npy", skeleton.astype(np.uint8))
        np.save(tmp / "small.npy", small.astype(np.uint8))
        if ignore is not None:
            np.save(tmp / "ignore.npy", box.crop(ignore).astype(np.uint8))
        for a in settings.alphas:
            w = distance_weights(mask, spacing_zyx=spacing, alpha=a, r_d=settings.r_d)
            np.save(tmp / f"{_weights_name(a)}.npy", np.asarray(w, dtype=np.float32))
        meta = {
            "name": case.name,
            "cache_version": CACHE_VERSION,
            "settings_key": settings.key(),
            "source": _source_fingerprint(case),
            "preprocessing": settings.preprocessing,
            "shape": list(mask.shape),
            "full_shape": list(ct.shape),
            "crop": box.to_dict(),
            "spacing_zyx": list(spacing),
            "geometry": geo.to_dict(),
            "alphas": list(settings.alphas),
            "small_diameter_mm": settings.small_diameter_mm,
            "counts": {
                "label": int(mask.sum()),
                "skeleton": int(skeleton.sum()),
                "small": int(small.sum()),
                "ignore": 0 if ignore is None else int(box.crop(ignore).sum()),
            },
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CachedCase(case.name, folder, meta)


def cached_case_if_fresh(case: CaseFiles, settings: CacheSettings, folder: Path) -> CachedCase | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("settings_key") != settings.key() or meta.get("source") != _source_fingerprint(case):
        return None
    if meta.get("name") != case.name:  # a folder copied from another case
        return None
    needed = ["image", "label", "skeleton", "small"] + [_weights_name(a) for a in settings.alphas]
    if settings.ignore_value:
        needed.append("ignore")
    if not all((folder / f"{n}.npy").is_file() for n in needed):
        return None
    return CachedCase(case.name, folder, meta)


def prepare_cases(
    cases: list[CaseFiles],
    cache_root: str | Path,
    settings: CacheSettings,
    on_bad_case: str = "stop",
    progress: Progress | None = None,  # (done, total, case name)
    cancel: Cancellable | None = None,
    force: bool = False,
) -> PrepareReport:
    """Build (or reuse) the cache of every case; bad cases are listed by name.

    ``on_bad_case="stop"`` raises one :class:`InputError` naming every bad case
    (after checking all of them, so the user fixes the dataset in one go);
    ``"skip"`` leaves them out and lists them in the report.
    """
    root = Path(cache_root)
    report = PrepareReport()
    for i, case in enumerate(cases):
        raise_if_cancelled(cancel, "Preparing the dataset was cancelled.")
        folder = root / case.name
        cached = None if force else cached_case_if_fresh(case, settings, folder)
        if cached is not None:
            report.cases.append(cached)
            report.reused.append(case.name)
        else:
            try:
                report.cases.append(build_case(case, settings, folder))
                report.built.append(case.name)
            except (AirwayError, OSError, RuntimeError, ValueError) as exc:
                report.bad.append(BadCase(case.name, str(exc)))
        if progress is not None:
            progress(i + 1, len(cases), case.name)
    if report.bad and on_bad_case == "stop":
        lines = "; ".join(f"{b.name}: {b.reason}" for b in report.bad)
        raise InputError(
            f"{len(report.bad)} bad case(s) in the dataset: {lines}",
            'Fix or remove them, or set data.on_bad_case = "skip" to train without them.',
        )
    if not report.cases:
        raise InputError(
            "No usable case is left in the dataset.", "Check the images and labels (see the reasons above)."
        )
    return report


def default_cache_dir(data: str | Path) -> Path:
    data = Path(data)
    return (data.parent if data.is_file() else data) / ".airway_cache"
