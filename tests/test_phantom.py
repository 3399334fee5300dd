"""Airway phantom: exact label, branch table, CT intensities, determinism."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest

from core.errors import ConfigError
from core.phantom import make_phantom


@pytest.fixture(scope="module")
def fine():
    # A 64^3 grid at ~1.2 mm: central airways, several generations visible.
    return make_phantom((64, 64, 64), spacing=(1.2, 1.2, 1.5), seed=3, omit_distal=1)


@pytest.fixture(scope="module")
def default():
    return make_phantom()


def test_default_64_runs_and_is_one_piece(default):
    p = default
    assert p.ct.shape == p.label.shape == p.centreline.shape == (64, 64, 64)
    assert p.ct.array.dtype == np.int16 and p.label.array.dtype == bool
    assert p.label.voxel_count() > 0
    _, n = cc3d.connected_components(p.label.array, connectivity=26, return_N=True)
    assert n == 1


def test_same_seed_same_arrays_other_seed_differs():
    a = make_phantom(seed=5)
    b = make_phantom(seed=5)
    c = make_phantom(seed=6)
    assert np.array_equal(a.ct.array, b.ct.array)
    assert np.array_equal(a.label.array, b.label.array)
    assert np.array_equal(a.centreline.array, b.centreline.array)
    assert not np.array_equal(a.ct.array, c.ct.array)


def test_centreline_inside_full_tree(fine):
    assert fine.centreline.voxel_count() > 0
    assert not np.any(fine.centreline.array & ~fine.full_label.array)


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError):
        make_phantom(shape=(4, 64, 64))
    with pytest.raises(ConfigError):
        make_phantom(omit_distal=10_000)
