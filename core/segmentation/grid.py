"""Where the windows go: the paper's grid of windows over a volume, and their weights.

Windows of ``window`` voxels step ``step`` (paper: 128 and 64, 50 % overlap)
along each axis; the last window of an axis is snapped to the border, and an
axis shorter than a window is padded up to one. Windows form a Cartesian grid,
so with separable weights (plain mean, or nnU-Net's Gaussian) the normaliser of
the whole grid is the outer product of three 1D sums (:func:`axis_normaliser`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import ConfigError

Window = tuple[slice, slice, slice]
Size3 = tuple[int, int, int]


def triple(value: int | Sequence[int], what: str) -> Size3:
    """A size given once or per axis, as three positive ints."""
    values = [int(value)] * 3 if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    if len(values) != 3 or min(values) < 1:
        raise ConfigError(f"{what} must be a positive size or three of them, got {value}.")
    return values[0], values[1], values[2]


def check_step(window: Size3, step: Size3) -> None:
    if any(s > w for s, w in zip(step, window)):
        raise ConfigError(
            f"Step {step} is larger than the window {window}: some voxels would get no prediction.",
            "Use a step no larger than the window (default: half of it).",
        )


def padded_shape(shape: Sequence[int], window: Size3) -> Size3:
    """The volume's shape with every axis shorter than a window padded up to one."""
    return triple([max(int(s), w) for s, w in zip(shape, window)], "shape")


def window_starts(size: int, window: int, step: int) -> list[int]:
    """Start of each window along one axis; the last one snapped so it ends at the border.

    ``size <= window`` gives ``[0]`` (the axis is padded up to ``window``).
    """
    if window < 1 or step < 1:
        raise ConfigError(f"Window {window} and step {step} must be positive.")
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step))
    starts.append(size - window)
    return starts


def window_slices(shape: Sequence[int], window: Sequence[int], step: Sequence[int]) -> list[Window]:
    """All windows of the grid, z-major."""
    axes = [window_starts(s, w, st) for s, w, st in zip(shape, window, step)]
    return [
        (slice(z, z + window[0]), slice(y, y + window[1]), slice(x, x + window[2]))
        for z in axes[0]
        for y in axes[1]
        for x in axes[2]
    ]


def gaussian_1d(window: int, sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """nnU-Net-style importance along one axis: peak 1 at the centre, sigma = window * sigma_scale."""
    centre = (window - 1) / 2.0
    sigma = max(window * sigma_scale, 1e-6)
    g = np.exp(-0.5 * ((np.arange(window) - centre) / sigma) ** 2)
    return np.asarray(np.maximum(g / g.max(), 1e-6), np.float32)


def window_weights(window: Size3, gaussian: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The 1D weights per axis, and their 3D product (None for the plain mean: every weight 1)."""
    weights_1d = [gaussian_1d(w) if gaussian else np.ones(w, np.float32) for w in window]
    if not gaussian:
        return weights_1d, None
    return weights_1d, weights_1d[0][:, None, None] * weights_1d[1][None, :, None] * weights_1d[2][None, None, :]


def axis_normaliser(size: int, window: int, step: int, weights: np.ndarray) -> np.ndarray:
    """Sum of the 1D window weights covering each position of an axis of ``size`` (>= window)."""
    total = np.zeros(size, np.float64)
    for s in window_starts(size, window, step):
        total[s : s + window] += weights
    return total.astype(np.float32)


def _key(sl: Window) -> tuple[int, ...]:
    return tuple(int(v) for s in sl for v in (s.start, s.stop))  # slices are not hashable before Python 3.12


def subset_of_grid(windows: Sequence[Window] | None, grid: list[Window]) -> list[Window] | None:
    """``windows`` as a list when it is a strict subset of ``grid`` (None: the whole grid, whose separable
    normaliser gives the plain sliding window bit for bit)."""
    if windows is None:
        return None
    chosen = list(windows)
    if len(chosen) == len(grid):
        return None
    known = {_key(sl) for sl in grid}
    if any(_key(sl) not in known for sl in chosen):
        raise ConfigError("Selected windows must come from the sliding-window grid of this volume.")
    return chosen


def select_windows(
    region: np.ndarray, window: int | Sequence[int], step: int | Sequence[int]
) -> tuple[list[Window], list[Window]]:
    """``(grid, chosen)``: every window of the grid over ``region``'s shape (padded up to a window), and
    those that touch a True voxel of ``region`` (none for an empty region: the output is then all 0)."""
    win = triple(window, "window")
    stp = triple(step, "step")
    grid = window_slices(padded_shape(region.shape, win), win, stp)
    chosen = [sl for sl in grid if region[sl].any()]  # slices past the end are clipped by numpy
    return grid, chosen
