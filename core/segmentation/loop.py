"""The sliding-window loop (method.md section 7), one for every device.

``sigmoid(dec)`` of each window is averaged over the windows that cover a voxel
(the paper and the authors' code: plain mean; ``gaussian=True``: nnU-Net-style
Gaussian weights, sigma = window / 8). A volume smaller than a window is padded
at its end with ``pad_value`` and cut back after.

The loop is written once over two kinds of array: a numpy array (the crop and
the accumulator on the host) or a torch tensor (both on the model's device, for
a GPU when the crop fits its memory: windows then never cross PCIe, only the
final probabilities do). What differs between them is only how a buffer is
made (:class:`_HostArrays`, :class:`_DeviceTensors`); every window, weight and
division is the same code, so both give the same numbers up to the network's own
arithmetic.

Memory: one float32 accumulator the size of the (padded) crop; the normaliser of
the whole grid is the outer product of three 1D sums, applied one z-slab at a time.
With a subset of windows (window selection) a second float32 volume sums the
weights per voxel instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.errors import InputError
from core.progress import Cancellable, Progress, eta_text, raise_if_cancelled
from core.segmentation.grid import (
    Size3,
    Window,
    axis_normaliser,
    check_step,
    padded_shape,
    subset_of_grid,
    triple,
    window_slices,
    window_weights,
)

#: a batch of windows ``(N, 1, *window)`` float32 -> probabilities of the same shape and kind
RunBatch = Callable[[Any], Any]


class _HostArrays:
    """numpy buffers (the CPU, or a GPU whose memory the crop does not fit)."""

    def volume(self, array: np.ndarray, padded: Size3, pad_value: float) -> np.ndarray:
        if padded != tuple(array.shape):
            pad = [(0, p - s) for p, s in zip(padded, array.shape)]
            array = np.pad(array, pad, mode="constant", constant_values=pad_value)
        return np.asarray(array, dtype=np.float32)

    def zeros(self, shape: Sequence[int]) -> np.ndarray:
        return np.zeros(tuple(shape), np.float32)

    def empty(self, shape: Sequence[int]) -> np.ndarray:
        return np.empty(tuple(shape), np.float32)

    def put(self, array: np.ndarray) -> np.ndarray:
        return array


class _DeviceTensors:
    """torch tensors on the volume's device."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def volume(self, tensor: Any, padded: Size3, pad_value: float) -> Any:
        import torch

        x = tensor.float()
        if padded != tuple(tensor.shape):
            pad: list[int] = []
            for p, s in reversed(list(zip(padded, tensor.shape))):  # F.pad wants the last axis first
                pad += [0, p - s]
            x = torch.nn.functional.pad(x, pad, mode="constant", value=pad_value)
        return x

    def zeros(self, shape: Sequence[int]) -> Any:
        import torch

        return torch.zeros(tuple(shape), dtype=torch.float32, device=self.device)

    def empty(self, shape: Sequence[int]) -> Any:
        import torch

        return torch.empty(tuple(shape), dtype=torch.float32, device=self.device)

    def put(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(array).to(self.device)


def sliding_window(
    volume: Any,
    run: RunBatch,
    window: int | Sequence[int] = 128,
    step: int | Sequence[int] = 64,
    batch_size: int = 1,
    gaussian: bool = False,
    pad_value: float = 0.0,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
    windows: Sequence[Window] | None = None,
) -> Any:
    """Probabilities (float32, shape of ``volume``) averaged over a grid of windows.

    ``volume``: a numpy array (result: a numpy array) or a torch tensor (result: a tensor on its device).
    ``run`` maps ``(N, 1, *window)`` float32 to probabilities of the same shape and kind.
    ``cancel`` is checked before every batch, so with ``batch_size=1`` a cancellation takes effect
    within one window; ``progress(done, total, "12/40 windows, about 30 s left")`` after every batch.
    ``windows``: run only these windows of the grid (:func:`core.segmentation.grid.select_windows`);
    voxels no chosen window covers get probability 0. None (or the whole grid) is the plain sliding
    window, bit for bit.
    """
    if volume.ndim != 3:
        raise InputError(f"Expected a 3D array, got shape {tuple(volume.shape)}.")
    win = triple(window, "window")
    stp = triple(step, "step")
    check_step(win, stp)
    shape = tuple(int(s) for s in volume.shape)
    padded = padded_shape(shape, win)
    xp: _HostArrays | _DeviceTensors = (
        _HostArrays() if isinstance(volume, np.ndarray) else _DeviceTensors(volume.device)
    )
    x = xp.volume(volume, padded, pad_value)
    weights_1d, w3d = window_weights(win, gaussian)
    weight_3d = None if w3d is None else xp.put(w3d)
    grid = window_slices(padded, win, stp)
    subset = subset_of_grid(windows, grid)
    slices = grid if subset is None else subset
    total = len(slices)
    acc = xp.zeros(padded)
    # a subset breaks the grid's separable normaliser: sum the weights per voxel instead
    wsum = None if subset is None else xp.zeros(padded)
    batch = xp.empty((max(1, batch_size), 1, *win))
    t0 = time.perf_counter()
    done = 0
    for b0 in range(0, total, len(batch)):
        raise_if_cancelled(cancel, f"Segmentation cancelled after {done} of {total} windows.")
        chunk = slices[b0 : b0 + len(batch)]
        for k, sl in enumerate(chunk):
            batch[k, 0] = x[sl]
        probs = run(batch[: len(chunk)])
        for k, sl in enumerate(chunk):
            acc[sl] += probs[k, 0] if weight_3d is None else probs[k, 0] * weight_3d
            if wsum is not None:
                wsum[sl] += 1.0 if weight_3d is None else weight_3d
        done += len(chunk)
        if progress is not None:
            progress(done, total, f"{done}/{total} windows" + eta_text(done, total, time.perf_counter() - t0))
    del x, batch
    # in place, one z-slab at a time, so no second volume-sized temporary exists
    if wsum is not None:
        for z in range(padded[0]):
            covered = wsum[z] > 0
            acc[z][covered] /= wsum[z][covered]
    else:
        norm = [xp.put(axis_normaliser(s, w, st, wt)) for s, w, st, wt in zip(padded, win, stp, weights_1d)]
        plane = norm[1][:, None] * norm[2][None, :]
        for z in range(padded[0]):
            acc[z] /= norm[0][z] * plane
    return acc[: shape[0], : shape[1], : shape[2]]
