"""NRRD (``.nrrd``, detached ``.nhdr``) through pynrrd.

The header's ``space`` names the world frame; RAS and LAS frames are turned into
LPS as ITK does. A file without ``space directions`` gets its ``spacings`` (or
1 mm) along the identity directions.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from core.io.decoded import Decoded, split_spacing, truncated, unreadable

COMPRESS_LEVEL = 1  # as core.io.nifti_file: fast saves of large volumes
_FLIPS = {
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
    "right-anterior-superior-time": (-1.0, -1.0, 1.0),
    "rast": (-1.0, -1.0, 1.0),
    "left-anterior-superior-time": (1.0, -1.0, 1.0),
    "last": (1.0, -1.0, 1.0),
}
_SPATIAL_KINDS = {"domain", "space", "time"}


def read(path: Path) -> Decoded:
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (EOFError, zlib.error):
        raise truncated(path) from None
    except (nrrd.NRRDError, ValueError, OSError, UnicodeDecodeError, KeyError, IndexError) as exc:
        text = str(exc)
        if "size of the data" in text.lower() or "buffer" in text or "bytes" in text:
            raise truncated(path) from None
        raise unreadable(path, text) from None
    ndim = data.ndim
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * ndim)]
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=float)
        spatial = [i for i in range(ndim) if np.isfinite(rows[i]).all()]
    else:
        spatial = [i for i in range(ndim) if kinds[i] in _SPATIAL_KINDS]
    # file axis i is array axis ndim-1-i; component axes are moved to the front
    others = [i for i in range(ndim) if i not in spatial]
    components = int(np.prod([data.shape[ndim - 1 - i] for i in others], dtype=np.int64)) if others else 1
    array = data if not others else np.moveaxis(data, [ndim - 1 - i for i in others], list(range(len(others))))
    if components == 1 and others:
        array = array.reshape(array.shape[len(others) :])
    n = min(len(spatial), 3)
    flips = np.asarray(_FLIPS.get(str(header.get("space", "")).lower(), (1.0, 1.0, 1.0)))
    if directions is not None and n:
        vectors = np.zeros((3, 3))
        k = min(rows.shape[1], 3)
        for col, axis in enumerate(spatial[:3]):
            vectors[:k, col] = rows[axis][:k] * flips[:k]
        spacing, direction = split_spacing(vectors)
        spacing = spacing[:n] + (1.0,) * (3 - n)
    else:
        raw = header.get("spacings")
        spacing = tuple(
            float(raw[i]) if raw is not None and np.isfinite(raw[i]) and raw[i] > 0 else 1.0 for i in spatial[:3]
        ) + (1.0,) * (3 - n)
        direction = np.eye(3)
    origin = header.get("space origin")
    if origin is None:
        mins = header.get("axis mins")
        origin = [float(mins[i]) if mins is not None and np.isfinite(mins[i]) else 0.0 for i in spatial[:3]]
        origin = np.asarray(list(origin) + [0.0] * (3 - len(origin)))
    else:
        origin = np.asarray(origin, dtype=float)[:3]
        origin = np.concatenate([origin, np.zeros(3 - origin.size)]) * flips
    return Decoded(array, spacing, tuple(float(v) for v in origin), direction, components)


def write(array: np.ndarray, spacing, origin, direction: np.ndarray, path: Path, compress: bool) -> None:
    import nrrd

    header = {
        "space": "left-posterior-superior",
        "space directions": (np.asarray(direction, float) * np.asarray(spacing, float)).T,
        "space origin": np.asarray(origin, float),
        "kinds": ["domain"] * 3,
        "endian": "little",
        "encoding": "gzip" if compress else "raw",
    }
    nrrd.write(str(path), np.ascontiguousarray(array), header, index_order="C", compression_level=COMPRESS_LEVEL)
