"""Which patches a training epoch sees (method.md sec. 5).

Per patch, one of three draws:

- **hard** (probability ``p_hard``, the paper's p_s = 0.5; stages that have
  stage-0 false negatives): a random centreline voxel the Dice model missed,
  and a patch containing it (inside the final, rotated patch);
- **small** (``p_small``, authors' code): a random small-airway voxel, the
  patch re-drawn (up to 10 times) until it holds at most ``max_large_voxels``
  large-airway voxels;
- **random**: a uniformly placed patch (padded where the volume is smaller).

Every patch is a pure function of ``(seed, stage, epoch, index)``: the order
of the epoch's ``n_cases x patches_per_case`` items is a seeded shuffle and
each item draws from its own seeded generator. Worker processes, DDP ranks
and a resumed run therefore see exactly the same patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.training.augmentation import Channel, extract_patch, random_rotation, start_containing
from core.training.cache import CachedCase

KINDS = ("random", "small", "hard")


@dataclass(frozen=True)
class PatchSpec:
    size: int
    threshold: float  # label threshold after rotation (stage's)
    alpha: float | None  # GUL weights of this alpha; None: no weights
    p_hard: float
    p_small: float
    max_large_voxels: int
    rotation_degrees: float
    rotation_prob: float


def epoch_order(n_cases: int, per_case: int, seed: int, stage: int, epoch: int) -> np.ndarray:
    """``(n_cases * per_case,)`` case indices in this epoch's shuffled order."""
    rng = np.random.default_rng([seed, stage, epoch, 0x5EED])
    order = np.repeat(np.arange(n_cases), per_case)
    rng.shuffle(order)
    return order


def item_rng(seed: int, stage: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, epoch, index, 0xA11])


def _coords(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(np.asarray(mask))


class CaseSampler:
    """Holds one case's arrays (memory maps) and candidate voxels for each draw."""

    def __init__(self, case: CachedCase, hard: np.ndarray | None = None):
        self.case = case
        self.image = case.image
        self.label = case.label
        self.small = case.small
        self.ignore = case.ignore
        self._small_coords: np.ndarray | None = None
        self._hard_coords = None if hard is None else _coords(hard)
        self._weights: dict[float, np.ndarray] = {}

    def weights(self, alpha: float) -> np.ndarray:
        if alpha not in self._weights:
            self._weights[alpha] = self.case.weights(alpha)
        return self._weights[alpha]

    @property
    def small_coords(self) -> np.ndarray:
        if self._small_coords is None:
            self._small_coords = _coords(self.small)
        return self._small_coords

    @property
    def hard_coords(self) -> np.ndarray | None:
        return self._hard_coords

    def _random_start(self, size: int, rng: np.random.Generator) -> np.ndarray:
        shape = np.asarray(self.label.shape)
        hi = shape - size
        # a volume smaller than the patch: place it at a random offset inside the padded patch
        lo = np.minimum(hi, 0)
        hi = np.maximum(hi, 0)
        return np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)], dtype=np.int64)

    def _large_count(self, start: np.ndarray, size: int) -> int:
        lo = np.clip(start, 0, self.label.shape)
        hi = np.clip(start + size, 0, self.label.shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        return int(np.count_nonzero(np.asarray(self.label[sl]) & ~np.asarray(self.small[sl]).astype(bool)))

    def draw(self, spec: PatchSpec, rng: np.random.Generator) -> dict[str, Any]:
        """One training sample: image, label, weights ``(1, P, P, P)`` float32, the draw's kind and target voxel."""
        rot = random_rotation(rng, spec.rotation_degrees, spec.rotation_prob)
        u = rng.random()
        kind, target = "random", None
        hard = self.hard_coords
        if u < spec.p_hard and hard is not None and len(hard):
            kind, target = "hard", hard[rng.integers(len(hard))]
            start = start_containing(target, spec.size, rot, rng)
        elif u < spec.p_hard + spec.p_small and len(self.small_coords):
            kind = "small"
            for _ in range(10):
                target = self.small_coords[rng.integers(len(self.small_coords))]
                start = start_containing(target, spec.size, rot, rng)
                if self._large_count(start, spec.size) <= spec.max_large_voxels:
                    break
        else:
            start = self._random_start(spec.size, rng)
        channels = [Channel(self.image, 1, 0.0), Channel(self.label, 1, 0.0)]
        if spec.alpha is not None:
            channels.append(Channel(self.weights(spec.alpha), 1, 1.0))
        if self.ignore is not None:
            channels.append(Channel(self.ignore, 1, 0.0))
        arrays = extract_patch(channels, start, spec.size, rot)
        image, label = arrays[0], arrays[1]
        # exact copies stay binary; rotated labels are interpolated floats (paper: threshold per stage)
        label = (label >= spec.threshold - 1e-6).astype(np.float32)
        out = {
            "image": image[None],
            "label": label[None],
            "kind": KINDS.index(kind),
            "target": np.asarray(target if target is not None else (-1, -1, -1), dtype=np.int64),
            "start": start,
            "rotation": rot.astype(np.float32),
        }
        if spec.alpha is not None:
            out["weight"] = np.clip(arrays[2], 0.0, 1.0)[None].astype(np.float32)
        if self.ignore is not None:
            out["ignore"] = (arrays[-1] >= 0.5).astype(np.float32)[None]
        return out


class PatchDataset:
    """Map-style dataset of one epoch (torch ``Dataset`` protocol: ``__len__``/``__getitem__``).

    ``indices`` selects a part of the epoch (a DDP rank's share, or the rest of
    an epoch after a resume); item ``i`` is always epoch item ``indices[i]``.
    Memory maps are opened lazily in each worker process.
    """

    def __init__(
        self,
        cases: list[CachedCase],
        spec: PatchSpec,
        seed: int,
        stage: int,
        epoch: int,
        per_case: int,
        hard: dict[str, np.ndarray] | None = None,
        indices: np.ndarray | None = None,
    ):
        self.cases = cases
        self.spec = spec
        self.seed, self.stage, self.epoch = seed, stage, epoch
        self.order = epoch_order(len(cases), per_case, seed, stage, epoch)
        self.indices = np.arange(len(self.order)) if indices is None else np.asarray(indices)
        self.hard = hard or {}
        self._samplers: dict[int, CaseSampler] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def sampler(self, case_index: int) -> CaseSampler:
        if case_index not in self._samplers:
            case = self.cases[case_index]
            self._samplers[case_index] = CaseSampler(case, self.hard.get(case.name))
        return self._samplers[case_index]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = int(self.indices[i])
        rng = item_rng(self.seed, self.stage, self.epoch, item)
        return self.sampler(int(self.order[item])).draw(self.spec, rng)
