"""core.dataset.freeze_split: deterministic, stored, never reshuffled, new cases appended, seed guarded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from dataset_fixtures import make_flat, make_nnunet, tiny_ct, tiny_mask

from core.dataset import freeze_split, freeze_split_report, open_dataset, read_state
from core.dataset.split import extend_split, make_split
from core.errors import InputError
from core.io import write_volume


def test_same_seed_same_split_whatever_the_listing_order() -> None:
    ids = [f"case_{i:03d}" for i in range(40)]
    a = make_split(7, ids, (0.7, 0.15, 0.15))
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert make_split(7, shuffled, (0.7, 0.15, 0.15)) == a
    assert [len(a[p]) for p in ("train", "validation", "test")] == [28, 6, 6]
    assert make_split(8, ids, (0.7, 0.15, 0.15)) != a
    assert sorted(sum(a.values(), [])) == sorted(ids)
    # the split of a fixed seed is pinned: a change of the hashing would reshuffle everyone's frozen splits
    assert make_split(1, [f"c{i}" for i in range(6)], (0.5, 0.25, 0.25)) == {
        "train": ["c2", "c4", "c5"],
        "validation": ["c0", "c3"],
        "test": ["c1"],
    }


def test_frozen_split_is_stored_and_never_reshuffled(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "d", n=10)
    ds = open_dataset(root)
    first = freeze_split(ds, 42)
    assert read_state(ds).split == first and read_state(ds).split_seed == 42
    assert {c.case_id: c.split for c in ds.cases} == {c: p for p, ids in first.items() for c in ids}
    again = open_dataset(root)
    assert freeze_split(again, 42) == first
    assert again.case("c3").split == next(p for p, ids in first.items() if "c3" in ids)

    # new cases are added to parts, removed ones dropped and reported; nobody moves
    for i in range(10, 16):
        write_volume(tiny_ct(i), root / f"c{i}_0000.nii.gz")
        write_volume(tiny_mask(i), root / f"c{i}.nii.gz")
    for name in ("c0_0000.nii.gz", "c0.nii.gz"):
        (root / name).unlink()
    grown = open_dataset(root)
    report = freeze_split_report(grown, 42)
    assert not report.created and report.removed == ["c0"]
    assert sorted(sum(report.added.values(), [])) == [f"c{i}" for i in range(10, 16)]
    for part, ids in first.items():
        assert [c for c in ids if c != "c0"] == [c for c in report.split[part] if c in ids]
    assert sum(len(v) for v in report.split.values()) == 15
    assert freeze_split(open_dataset(root), 42) == report.split  # stored


def test_appending_is_deterministic() -> None:
    split = {"train": ["a", "b", "c"], "validation": ["d"], "test": ["e"]}
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]
    one = extend_split(split, 5, ids, (0.6, 0.2, 0.2))
    two = extend_split(split, 5, list(reversed(ids)), (0.6, 0.2, 0.2))
    assert one == two
    assert one[0]["train"][:3] == ["a", "b", "c"]


def test_another_seed_is_refused_unless_forced(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=8))
    first = freeze_split(ds, 1)
    with pytest.raises(InputError) as err:
        freeze_split(ds, 2)
    assert "frozen with seed 1" in str(err.value) and "--force" in str(err.value)
    with pytest.raises(InputError, match="fractions"):
        freeze_split(ds, 1, (0.5, 0.25, 0.25))
    assert freeze_split(ds, 1) == first
    forced = freeze_split(ds, 2, force=True)
    assert read_state(ds).split_seed == 2 and forced == make_split(2, ds.case_ids, (0.7, 0.15, 0.15))


def test_bad_fractions_are_refused(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=3))
    for bad in ((0.5, 0.5), (1, -1, 0.5), (0, 0, 0)):
        with pytest.raises(InputError, match="fractions"):
            freeze_split(ds, 1, bad)


def test_nnunet_test_images_stay_in_test(tmp_path: Path) -> None:
    ds = open_dataset(make_nnunet(tmp_path / "nn", n_train=6, n_test=3))
    split = freeze_split(ds, 0, (1.0, 0.0, 0.0))
    assert split["test"] == ["case_006", "case_007", "case_008"]
    assert split["train"] == [f"case_{i:03d}" for i in range(6)]


def test_a_case_that_comes_back_returns_to_its_part(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "d", n=12)
    first = freeze_split(open_dataset(root), 9)
    test_case = first["test"][0]
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in (f"{test_case}_0000.nii.gz", f"{test_case}.nii.gz"):
        (root / name).rename(aside / name)
    gone = freeze_split_report(open_dataset(root), 9)
    assert gone.removed == [test_case] and test_case not in sum(gone.split.values(), [])
    # meanwhile a new case fills the test part's gap: by the fractions alone the old case would now go to train
    write_volume(tiny_ct(50), root / "new_0000.nii.gz")
    write_volume(tiny_mask(50), root / "new.nii.gz")
    assert freeze_split_report(open_dataset(root), 9).added == {"test": ["new"]}
    for name in (f"{test_case}_0000.nii.gz", f"{test_case}.nii.gz"):
        (aside / name).rename(root / name)
    back = freeze_split_report(open_dataset(root), 9)
    assert back.added == {"test": [test_case]}
    assert {p: [c for c in ids if c != "new"] for p, ids in back.split.items()} == first
    assert read_state(open_dataset(root)).split_removed == {}
