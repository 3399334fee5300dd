"""Runs windows through a backend a batch at a time, with CUDA out-of-memory handling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.errors import ConfigError, InputError

Say = Callable[[str], None]
#: a backend: ``(N, 1, D, H, W)`` float32 -> probabilities (numpy; a torch tensor too where it ``accepts_tensors``)
Engine = Callable[[Any], Any]


def quiet(_: str) -> None:
    pass


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def _free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


class BatchRunner:
    """Runs windows through a backend ``batch_size`` at a time.

    A CUDA out-of-memory error halves the batch and retries; at a batch of one
    it switches to ``fallback()`` (the CPU) and says so. Without a fallback the
    error is reported as an :class:`InputError` with what to try.
    """

    def __init__(
        self,
        backend: Engine,
        batch_size: int = 1,
        fallback: Callable[[], Engine] | None = None,
        say: Say = quiet,
    ):
        if batch_size < 1:
            raise ConfigError(f"Batch size {batch_size} must be at least 1.")
        self.backend = backend
        self.batch_size = int(batch_size)
        self.fallback = fallback
        self.say = say

    @property
    def name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    @property
    def accepts_tensors(self) -> bool:
        return bool(getattr(self.backend, "accepts_tensors", False))

    def __call__(self, windows: Any) -> Any:
        """``windows`` (N, 1, D, H, W) float32 -> probabilities of the same shape and kind
        (a numpy array, or a torch tensor that stays on its device)."""
        if isinstance(windows, np.ndarray):
            return self._run(windows, np.empty(windows.shape, np.float32), False)
        import torch

        return self._run(windows, torch.empty_like(windows, dtype=torch.float32), True)

    def _run(self, windows: Any, out: Any, as_tensor: bool) -> Any:
        i = 0
        while i < len(windows):
            n = min(self.batch_size, len(windows) - i)
            try:
                chunk = windows[i : i + n]
                if as_tensor and not self.accepts_tensors:
                    import torch

                    # e.g. the CPU fallback after a GPU out-of-memory error: numpy in, numpy out
                    out[i : i + n] = torch.from_numpy(self.backend(chunk.cpu().numpy())).to(out.device)
                else:
                    out[i : i + n] = self.backend(chunk)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                _free_cuda_cache()
                if self.batch_size > 1:
                    self.batch_size = max(1, self.batch_size // 2)
                    self.say(f"Out of GPU memory; retrying with a batch of {self.batch_size} window(s).")
                    continue
                if self.fallback is None:
                    raise InputError(
                        "Out of memory running one window.",
                        "Use --device cpu, a smaller --window, or close other programs using the GPU.",
                    ) from None
                self.say("Out of GPU memory even with one window; continuing on the CPU (slower).")
                self.backend = self.fallback()
                self.fallback = None
                continue
            i += n
        return out
