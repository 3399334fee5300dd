"""The output policy (core.outputs), cache keys, input sanity (core.sanity) and hints that name real flags."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.outputs import OutputPlan, content_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantoms():
    from core.phantom import make_phantom

    return (make_phantom(40, spacing=(1.5, 1.5, 1.5), seed=0), make_phantom(40, spacing=(1.5, 1.5, 1.5), seed=5))


@pytest.fixture
def files(phantoms, tmp_path):
    from core.io import write_volume

    a, b = phantoms
    write_volume(a.label, tmp_path / "ref.nii.gz")
    write_volume(b.label, tmp_path / "other.nii.gz")
    return tmp_path


# -- the plan -------------------------------------------------------------------------------


def test_a_failure_leaves_no_partial_output(tmp_path):
    plan = OutputPlan()
    plan.add(tmp_path / "sub" / "a.txt")
    plan.add(tmp_path / "sub" / "b.txt")
    plan.check()
    with pytest.raises(RuntimeError):
        with plan:
            plan.write_text(tmp_path / "sub" / "a.txt", "first")
            raise RuntimeError("the second output failed")
    assert not (tmp_path / "sub").exists()  # staged file and the folder made for it are gone


def test_outputs_appear_together_and_only_on_commit(tmp_path):
    plan = OutputPlan()
    with plan:
        plan.write_text(tmp_path / "a.txt", "a")
        plan.write_bytes(tmp_path / "b.bin", b"b")
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b.bin").read_bytes() == b"b"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_first_original_is_the_backup_and_stays_it(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("original")
    for version in ("second", "third"):
        with OutputPlan(overwrite=True) as plan:
            plan.write_text(target, version)
    assert target.read_text() == "third"
    assert (tmp_path / "out.json.bak").read_text() == "original"


def test_existing_output_input_as_output_and_folder_are_refused(tmp_path):
    (tmp_path / "in.nii.gz").write_bytes(b"x")
    (tmp_path / "old.csv").write_text("x")
    os.link(tmp_path / "in.nii.gz", tmp_path / "hardlink.nii.gz")
    plan = OutputPlan(True, [tmp_path / "in.nii.gz"])
    plan.add(tmp_path / "hardlink.nii.gz", "--json")  # another name, the same file
    with pytest.raises(InputError, match="also an input.*another --json"):
        plan.check()
    plan = OutputPlan(False)
    plan.add(tmp_path / "old.csv", "--csv")
    with pytest.raises(InputError, match="--overwrite"):
        plan.check()
    plan = OutputPlan(True)
    plan.add(tmp_path, "--json")
    with pytest.raises(InputError, match="folder"):
        plan.check()


def test_an_unwritable_folder_is_refused_before_work(tmp_path, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    plan = OutputPlan()
    plan.add(tmp_path / "x.json", "--json")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root ignores chmod; this is what a read-only folder does
    with pytest.raises(InputError, match="not writable.*--json"):
        plan.check()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_modes_follow_the_umask(umask, tmp_path, phantoms):
    from core.cli import main

    old = os.umask(umask)
    try:
        assert main(["phantom", "--size", "32", "--out", str(tmp_path / "ph")]) == 0
        from core.io import write_volume

        write_volume(phantoms[0].label, tmp_path / "mask.nrrd")
        with OutputPlan() as plan:
            plan.write_volume(phantoms[0].label, tmp_path / "staged.mha")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 7
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


# -- caches ---------------------------------------------------------------------------------


def _evaluate(*argv) -> int:
    from core.cli import main

    return main(["evaluate", *map(str, argv)])


def test_tree_cache_is_keyed_by_content_and_grid(files, capsys):
    from core.io import read_label, write_volume
    from core.volume import Geometry, LabelVolume

    ref, other, tree = files / "ref.nii.gz", files / "other.nii.gz", files / "t.npz"
    assert _evaluate("--reference", ref, "--prediction", ref, "--tree", tree) == 0
    capsys.readouterr()
    assert _evaluate("--reference", ref, "--prediction", ref, "--tree", tree) == 0
    assert "skeleton" not in capsys.readouterr().err  # reused, not parsed again
    # another phantom of the same shape: refused (once gave TD 93.9 with a wrong branch count)
    assert _evaluate("--reference", other, "--prediction", other, "--tree", tree) == 2
    assert "another reference" in capsys.readouterr().err
    # the same mask moved: refused too
    lab = read_label(ref)
    g = lab.geometry
    write_volume(
        LabelVolume(lab.mask, Geometry(g.spacing, tuple(o + 1 for o in g.origin), g.direction)), files / "moved.nii.gz"
    )
    assert _evaluate("--reference", files / "moved.nii.gz", "--prediction", files / "moved.nii.gz", "--tree", tree) == 2
    # --overwrite parses again and replaces it; the result is the right one
    assert (
        _evaluate(
            "--reference", other, "--prediction", other, "--tree", tree, "--overwrite", "--json", files / "r.json"
        )
        == 0
    )
    doc = json.loads((files / "r.json").read_text())
    assert doc["cases"][0]["td"] == pytest.approx(100.0) and doc["cases"][0]["bd"] == pytest.approx(100.0)
    assert (files / "t.npz.bak").exists()
    assert content_key(read_label(other)) != content_key(lab)


def test_dataset_cache_notices_a_file_replaced_with_the_same_size_and_time(tmp_path, phantoms):
    from core.io import write_volume
    from core.training.cache import CacheSettings, prepare_cases
    from core.training.dataset import discover_cases
    from core.volume import LabelVolume

    a, _ = phantoms
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    # uncompressed NIfTI: another mask of the same grid is a file of exactly the same size
    write_volume(a.ct, tmp_path / "imagesTr" / "c_0000.nii")
    label = tmp_path / "labelsTr" / "c.nii"
    write_volume(LabelVolume(a.label.mask.astype(np.uint8), a.label.geometry), label)
    settings = CacheSettings({"window": [-1000, 600], "scale": 255.0, "crop": "none", "margin": 5}, alphas=(0.1,))
    assert prepare_cases(discover_cases(tmp_path), tmp_path / "cache", settings).built == ["c"]
    assert prepare_cases(discover_cases(tmp_path), tmp_path / "cache", settings).reused == ["c"]
    st = label.stat()
    mask = a.label.mask.copy()
    z = int(np.nonzero(mask)[0].max())
    mask[z] = False  # the lowest airway slice gone
    write_volume(LabelVolume(mask.astype(np.uint8), a.label.geometry), label)
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert label.stat().st_size == st.st_size and label.stat().st_mtime_ns == st.st_mtime_ns
    again = prepare_cases(discover_cases(tmp_path), tmp_path / "cache", settings)
    assert again.built == ["c"]
    assert again.cases[0].meta["counts"]["label"] == int(mask.sum())


def test_exported_model_cache_is_checked_against_its_full_source(tmp_path):
    from core.segmentation.backends import _cached_export

    calls = []

    def export(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "model.onnx").write_text(f"export {len(calls)}")

    folder = tmp_path / "onnx" / "abc"
    src = {"model_key": "abc" * 20, "window": [16, 16, 16], "opset": 17}
    path = _cached_export(folder, "model.onnx", src, export, lambda s: None, "ONNX")
    assert path.read_text() == "export 1"
    assert _cached_export(folder, "model.onnx", src, export, lambda s: None, "ONNX").read_text() == "export 1"
    said = []
    other = {**src, "model_key": "abc" * 8 + "different"}  # same 24-character folder key, another model
    assert _cached_export(folder, "model.onnx", other, export, said.append, "ONNX").read_text() == "export 2"
    assert "another model" in said[0]


def test_state_hash_sees_parameter_free_architecture_choices():
    torch = pytest.importorskip("torch")
    from core.segmentation.backends import state_hash

    a, b = torch.nn.Conv3d(1, 1, 3), torch.nn.Conv3d(1, 1, 3)
    b.load_state_dict(a.state_dict())
    assert state_hash(a) == state_hash(b)
    b.arch_args = {"norm": "instance"}
    assert state_hash(a) != state_hash(b)


# -- input sanity -----------------------------------------------------------------------------


def test_full_and_empty_predictions_are_warned_in_text_and_json(files, phantoms, capsys):
    from core.io import write_volume
    from core.volume import LabelVolume

    g = phantoms[0].label.geometry
    shape = phantoms[0].label.shape
    write_volume(LabelVolume(np.ones(shape, bool), g), files / "ones.nii.gz")
    write_volume(LabelVolume(np.zeros(shape, bool), g), files / "zeros.nii.gz")
    assert (
        _evaluate(
            "--reference",
            files / "ref.nii.gz",
            "--prediction",
            files / "ones.nii.gz",
            files / "zeros.nii.gz",
            "--json",
            files / "r.json",
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "fills 100% of the volume" in err and "is empty" in err
    cases = json.loads((files / "r.json").read_text())["cases"]
    assert "fills 100%" in cases[0]["warnings"][0] and "empty" in cases[1]["warnings"][0]


@pytest.mark.slow
def test_sanity_limits_pass_phantoms_and_real_chest_cts(phantoms, shared_data):
    from core.io import read_ct
    from core.sanity import check_ct, check_label

    assert check_ct(phantoms[0].ct) == []
    assert check_label(phantoms[0].label, "reference") == []
    # cropped mediastinum, downsampled whole chest, abdomen with lung bases (int32, flipped), a DICOM series
    for rel in ("totalseg/aorta_ct_cropped.nii.gz", "cip/ct-64.nrrd", "totalseg/example_ct.nii.gz", "chest_ct_dicom"):
        assert check_ct(read_ct(shared_data / rel)) == [], rel


def test_sanity_refuses_air_free_and_body_free_cts(phantoms):
    from core.sanity import check_ct, check_label

    ct = phantoms[0].ct
    assert [f.level for f in check_ct(np.zeros(ct.shape, np.int16))] == ["error"]
    assert [f.level for f in check_ct(np.full(ct.shape, -1000, np.int16))] == ["error"]
    assert [f.level for f in check_label(np.ones(ct.shape, bool), "reference")] == ["error"]
    assert [f.level for f in check_label(np.ones(ct.shape, bool), "prediction")] == ["warning"]
    assert [f.level for f in check_label(np.zeros(ct.shape, bool), "prediction")] == ["warning"]
    from core.phantom import make_phantom

    whole = make_phantom(40)  # the whole chest in the grid: air around the body
    assert check_ct(whole.ct) == []
    no_lungs = whole.ct.array.copy()
    no_lungs[whole.lungs.mask | whole.label.mask] = 40  # soft tissue where the lungs were
    assert [(f.level, "No lungs" in f.what) for f in check_ct(no_lungs)] == [("warning", True)]
    assert check_ct(no_lungs, lungs=False) == []


def test_evaluate_resamples_to_the_reference_grid_only_when_asked(files, capsys):
    from core.io import read_label, write_volume
    from core.volume import Geometry, LabelVolume

    lab = read_label(files / "ref.nii.gz")
    g = lab.geometry
    write_volume(
        LabelVolume(lab.mask, Geometry(g.spacing, tuple(o + 3 for o in g.origin), g.direction)),
        files / "shifted.nii.gz",
    )
    args = ["--reference", files / "ref.nii.gz", "--prediction", files / "shifted.nii.gz"]
    assert _evaluate(*args) == 2
    assert "--resample-to-ct" in capsys.readouterr().err
    assert _evaluate(*args, "--resample-to-ct") == 0
    assert "resampled onto the reference's grid" in capsys.readouterr().err


# -- hints ------------------------------------------------------------------------------------


def _all_flags() -> set[str]:
    import argparse

    from core.cli import build_parser

    flags: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:  # noqa: SLF001 - argparse keeps no public list
            flags.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    from app.__main__ import build_parser as app_parser

    walk(app_parser())
    return flags


def _hint_texts() -> list[tuple[str, str]]:
    """Every string inside an error or finding constructor in core/ and app/ (what and fix)."""
    out = []
    for py in [*ROOT.glob("core/**/*.py"), *ROOT.glob("app/**/*.py")]:
        tree = ast.parse(py.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name.endswith("Error") or name in ("Finding", "_say", "append"):
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                            out.append((f"{py.relative_to(ROOT)}:{node.lineno}", sub.value))
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "fix" for t in node.targets):
                for sub in ast.walk(node.value):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        out.append((f"{py.relative_to(ROOT)}:{node.lineno}", sub.value))
    return out


@pytest.mark.slow
def test_every_hint_names_a_real_flag():
    flags = _all_flags()
    texts = _hint_texts()
    assert sum("--" in t for _, t in texts) > 20  # the scan finds the hints at all
    wrong = [
        (where, flag)
        for where, text in _hint_texts()
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)
        if flag not in flags
    ]
    assert wrong == []


def test_library_tree_cache_replaces_a_stale_tree_instead_of_refusing(files):
    """Callers whose tree path is their own cache (airway compare) get a fresh parse, never the stale tree."""
    from core.commands.evaluate import _tree_for
    from core.io import read_label
    from core.tree import AirwayTree

    ref, other = read_label(files / "ref.nii.gz"), read_label(files / "other.nii.gz")
    path = files / "cache" / "t.npz"
    path.parent.mkdir()
    first = _tree_for(other, path, None)
    again = _tree_for(ref, path, None)
    assert again.params["source_key"] == content_key(ref) != first.params["source_key"]
    assert AirwayTree.load(path).params["source_key"] == content_key(ref)
    with pytest.raises(InputError, match="--overwrite"):
        _tree_for(other, path, None, OutputPlan(), False)
