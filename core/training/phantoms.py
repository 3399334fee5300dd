"""Synthetic training sets: phantoms (core.phantom) written in the ATM'22 / nnU-Net layout.

``DATA/imagesTr/phantom_007_0000.nii.gz`` (CT in HU),
``DATA/labelsTr/phantom_007.nii.gz`` (airway mask) and
``DATA/branchesTr/phantom_007.json`` (branch table with true names, as ``airway phantom``), case ``i`` made with seed
``seed + i``, so a dataset is reproduced from (n, size, seed, difficulty).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.progress import Cancellable, Progress, raise_if_cancelled


def write_phantom_dataset(
    out: str | Path,
    n: int,
    size: int = 64,
    seed: int = 0,
    spacing: tuple[float, float, float] | None = None,
    difficulty: str | float | None = None,
    generations: int | None = None,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
) -> list[str]:
    """Write ``n`` phantoms of ``size^3`` voxels; returns the case names.

    ``spacing`` (x, y, z) mm; None lets core.phantom fit the whole chest into
    the grid (coarse at small sizes); a finer spacing centres the grid on the
    central airways and resolves more of them.
    """
    from core.io import write_volume
    from core.phantom import make_phantom

    if n < 1:
        raise ConfigError(f"--n {n}: at least one phantom is needed.", "Use --n 1 or more.")
    if size < 16:
        raise ConfigError(f"--size {size} is too small for a phantom airway tree.", "Use --size 32 or more.")
    if spacing is not None:
        values = [float(v) for v in spacing]
        if len(values) != 3 or min(values) <= 0:
            raise ConfigError(
                f"--spacing {spacing} must be three positive values (x y z, mm).", "Use e.g. --spacing 2 2 2.5."
            )
        spacing = (values[0], values[1], values[2])
    out = Path(out)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(make_phantom).parameters
    if difficulty is not None and "difficulty" in params:
        kwargs["difficulty"] = difficulty
    if generations is not None and "generations" in params:
        kwargs["generations"] = generations
    names = []
    for i in range(n):
        raise_if_cancelled(cancel, "Writing phantoms was cancelled.")
        name = f"phantom_{i:03d}"
        ph = make_phantom(shape=(size, size, size), spacing=spacing, seed=seed + i, **kwargs)
        write_volume(ph.ct, out / "imagesTr" / f"{name}_0000.nii.gz")
        write_volume(ph.label, out / "labelsTr" / f"{name}.nii.gz")
        # the branch table with each branch's true anatomical name: truth for the anatomy labeller
        (out / "branchesTr").mkdir(parents=True, exist_ok=True)
        (out / "branchesTr" / f"{name}.json").write_text(ph.to_json())
        names.append(name)
        if progress is not None:
            progress(i + 1, n, name)
    info = {
        "generator": "core.phantom.make_phantom",
        "n": n,
        "size": size,
        "seed": seed,
        "spacing": None if spacing is None else list(spacing),
        "difficulty": difficulty,
        "generations": generations,
        "cases": names,
    }
    (out / "phantoms.json").write_text(json.dumps(info, indent=1))
    return names
