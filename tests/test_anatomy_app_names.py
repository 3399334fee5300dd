"""The names layer of the review session (core.review.names), headless: the labeller's names of the reference
tree, a user's correction (descendants follow), undo, the project and recovery files, and corrections placed
again by position when the reference changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from anatomy_case import SPACING_XYZ, reference, stub

from core.errors import InputError
from core.review import Session
from core.review.names import branch_at_position, region_branches
from core.review.project import PROJECT_FORMAT, PROJECT_VERSION, read_project, write_project
from core.volume import Geometry, LabelVolume

GEOMETRY = Geometry(spacing=SPACING_XYZ)


def _session(pred: np.ndarray | None = None, **options: object) -> Session:
    ref = reference()
    preds = [LabelVolume(pred, GEOMETRY, name="model")] if pred is not None else []
    s = Session(None, LabelVolume(ref, GEOMETRY), preds, **options)  # type: ignore[arg-type]
    s.analyse()
    return s


def _branch(s: Session, name: str) -> int:
    assert s.names.names is not None
    ids = s.names.names.branches_named(name)
    assert len(ids) == 1, (name, s.names.names.table(s.tree))
    return ids[0]


@pytest.mark.slow
def test_analysis_names_the_reference_tree() -> None:
    s = _session()
    assert s.names.error is None
    assert s.names.reference_key is not None
    for name in ("Trachea", "RMB", "LMB", "RUL", "LLL"):
        _branch(s, name)


@pytest.mark.slow
def test_a_correction_is_undoable_and_descendants_follow() -> None:
    s = _session()
    rul = _branch(s, "RUL")
    kids = s.tree.branch(rul).children
    assert kids and all(s.names.names.lobe_of(k) == "RUL" for k in kids)
    events: list[tuple[str, object]] = []
    s.subscribe(lambda kind, payload: events.append((kind, payload)))

    edit = s.name_branch(rul, "RLL")

    assert s.names.names.name_of(rul) == "RLL"
    assert s.names.name(rul).source == "user"
    assert all(s.names.names.lobe_of(k) == "RLL" for k in kids)  # the children follow the new lobe
    assert ("names", rul) in events
    assert s.edit_log[-1]["tool"] == "name" and s.edit_log[-1]["branch"] == rul
    assert s.history.undo_stack[-1] is edit

    s.undo()
    assert s.names.names.name_of(rul) == "RUL" and not s.names.is_corrected(rul)
    assert all(s.names.names.lobe_of(k) == "RUL" for k in kids)
    s.redo()
    assert s.names.names.name_of(rul) == "RLL"
    # back to the labeller's name: the correction goes
    s.name_branch(rul, None, automatic=True)
    assert s.names.names.name_of(rul) == "RUL" and not s.names.corrections


@pytest.mark.slow
def test_naming_before_the_tree_is_named_says_what_to_do() -> None:
    s = Session(None, LabelVolume(reference(), GEOMETRY))
    with pytest.raises(InputError, match="no names yet"):
        s.name_branch(3, "RB6")


@pytest.mark.slow
def test_corrections_saved_in_the_project_are_reapplied_on_reopening(tmp_path: Path) -> None:
    s = _session()
    rul = _branch(s, "RUL")
    s.name_branch(rul, "RLL")
    project = tmp_path / "case.json"
    write_project(project, {"format": PROJECT_FORMAT, "version": PROJECT_VERSION, "names": s.names.to_json()})

    data = read_project(project)
    reopened = Session(None, LabelVolume(reference(), GEOMETRY))
    reopened.names.load_json(data["names"])
    reopened.analyse()

    assert reopened.names.names.name_of(rul) == "RLL"  # same reference content: by branch id
    assert reopened.names.names.branches_named("RUL") == []


def test_a_damaged_names_field_is_named_before_anything_opens(tmp_path: Path) -> None:
    project = tmp_path / "bad.json"
    bad = {"reference_key": "k", "corrections": [{"branch": 0, "name": "RB6", "position_mm": [1, 2]}]}
    write_project(project, {"format": PROJECT_FORMAT, "version": PROJECT_VERSION, "names": bad})
    with pytest.raises(InputError, match="field 'names' must be"):
        read_project(project)


@pytest.mark.slow
def test_a_changed_tree_gets_the_correction_by_position() -> None:
    s = _session()
    rul = _branch(s, "RUL")
    s.name_branch(rul, "RLL")
    position = s.names.corrections[rul].position_mm
    old_key = s.names.reference_key
    old_ids = {b.id: b.children for b in s.tree.branches}

    # the reference gains a side branch: parsed again, its branches are numbered anew
    new_ref = s.reference.array | stub()
    s.replace_voxels(s.reference, new_ref, tool="test")
    s.analyse()

    assert s.names.reference_key != old_key
    assert {b.id: b.children for b in s.tree.branches} != old_ids
    moved = branch_at_position(s.tree, position)
    assert moved is not None
    assert s.names.is_corrected(moved)
    assert s.names.names.name_of(moved) == "RLL"
    assert all(s.names.names.lobe_of(k) == "RLL" for k in s.tree.branch(moved).children)


@pytest.mark.slow
def test_recovery_keeps_the_corrections(tmp_path: Path) -> None:
    from core.io import write_volume

    ref_path = tmp_path / "ref.nii.gz"
    write_volume(LabelVolume(reference().astype(np.uint8), GEOMETRY), ref_path)
    s = Session.load(None, ref_path, recovery_dir=tmp_path, autosave_interval_s=0.0)
    s.analyse()
    rul = _branch(s, "RUL")
    s.name_branch(rul, "RB6")
    assert s.recovery_path is not None and s.recovery_path.exists()

    back = Session.recover(s.recovery_path, recovery_dir=tmp_path)
    back.analyse()
    assert back.names.names.name_of(rul) == "RB6"


def _fp(key: str, lo: tuple[int, int, int], size: int = 2):  # noqa: ANN202 - a core.regions.ErrorRegion
    import dataclasses

    from airway_shapes import error_region

    coords = np.argwhere(np.ones((size,) * 3, bool)) + np.asarray(lo)
    return dataclasses.replace(error_region(key, "FP"), coords=coords, voxels=len(coords))


@pytest.mark.slow
def test_regions_lie_in_the_branch_they_touch_and_far_fp_lies_outside() -> None:
    ref = reference()
    pred = ref.copy()
    s0 = _session()
    rul = _branch(s0, "RUL")
    # an FN: the RUL stem missed; an FP blob touching the trachea
    pred[s0.tree.branch_label_map() == rul] = False
    pred[66:70, 40:44, 52:56] = True
    s = _session(pred)
    trachea = _branch(s, "Trachea")
    where = {r.kind: s.region_branch(0, r.key) for r in s.regions(0)}
    assert where == {"FN": rul, "FP": trachea}
    assert region_branches([r.error for r in s.regions(0)], s.tree) == s._analysis["model"].branches

    # FP voxels apart from the reference: the nearest branch within 5 mm, else outside (0)
    sp_x = SPACING_XYZ[0]
    near = _fp("near", (66, 40, 48 + 4 + int(3.0 / sp_x)))  # ~3 mm beside the trachea's wall
    far = _fp("far", (66, 40, 48 + 4 + int(8.0 / sp_x)))  # ~8 mm
    corner = _fp("corner", (1, 1, 1))
    assert region_branches([near, far, corner], s.tree) == {"near": trachea, "far": 0, "corner": 0}


@pytest.mark.slow
def test_a_correction_whose_branch_is_gone_is_reported_lost() -> None:
    s = _session()
    rul = _branch(s, "RUL")
    s.name_branch(rul, "RB6")
    gone = [rul, *s.tree.branch(rul).children]
    keep = s.reference.array & ~np.isin(s.tree.branch_label_map(), gone)
    s.replace_voxels(s.reference, keep, tool="test")
    s.analyse()
    assert not s.names.corrections
    assert [c.name for c in s.names.lost] == ["RB6"]
    assert s.names.names.branches_named("RB6") == []
