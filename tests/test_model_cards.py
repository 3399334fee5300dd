"""Model cards with context (issue 24 item 8): held-out figures name their data, cards state the input a
model expects, ``airway segment`` can warn when a CT is far from it, ``airway models`` lists the shipped
checkpoints; card metadata is rewritten without touching the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.models.card import (
    card_from_dataset,
    card_summary,
    checkpoint_card_text,
    expected_input,
    input_warnings,
    read_header,
)
from core.resources import resources_root

MODELS = resources_root() / "models"
SHIPPED = sorted(MODELS.glob("*.pt"))


def _header(name: str) -> dict:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{name} not installed")
    header = read_header(path)
    assert header is not None
    return header


@pytest.mark.slow  # counts the FLOPs of every architecture first (5 s of CPU)
def test_models_lists_every_shipped_checkpoint_on_one_line(capsys):
    from core.cli import main

    assert SHIPPED, "no shipped checkpoint in resources/models"
    assert main(["models", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "Shipped checkpoints" in out
    for path in SHIPPED:
        lines = [line for line in out.splitlines() if line.strip().startswith(f"{path.name}:")]
        assert len(lines) == 1, (path.name, out)
        assert "held-out" in lines[0] and " mm" in lines[0] and "wingsnet" in lines[0]
    assert "[default for --method model]" in next(line for line in out.splitlines() if "realct_wingsnet.pt:" in line)
    assert main(["models", "--size", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in rows if r["row"] == "checkpoint") == [p.name for p in SHIPPED]


def test_held_out_figures_name_their_data_everywhere(capsys):
    """'held-out TD 90.8, BD 89.0' did not say these were 10 phantoms of 48^3 at 2.5 mm."""
    from core.cli import main

    header = _header("realct_wingsnet.pt")
    summary = card_summary(header)  # the Segment panel's line and the gate warning's context
    assert "held-out TD 90.8, BD 89.0" in summary
    assert "on 10 phantoms of 48^3 at 2.5 x 2.5 x 3 mm" in summary
    assert "1 real CT of 79 x 64 x 64 at 4.172 x 4.172 x 3.987 mm (CIP ct-64" in summary
    assert "expects voxels of 2.5 x 2.5 x 3 mm" in summary
    panel_summary, panel_lines = checkpoint_card_text(MODELS / "realct_wingsnet.pt")
    assert panel_summary == summary and any(line.startswith("held-out: DSC 68.7") for line in panel_lines)

    assert main(["models", "--checkpoint", str(MODELS / "demo_wingsnet.pt")]) == 0
    out = capsys.readouterr().out
    assert "held-out: TD 95.4, BD 94.3, DSC 94.1, precision 94.6 on 10 phantoms of 48^3 at 2.5 x 2.5 x 3 mm" in out
    assert (
        "expects: voxels of 2.5 x 2.5 x 3 mm (CTs are resampled to it) and a field of view of 120 x 120 x 144 mm" in out
    )
    assert "validation: TD 95.7" in out and "on 3 phantoms of 48^3" in out


def test_a_ct_far_from_the_models_input_is_named():
    """The demo model collapses to 0 on `airway phantom --size 96` (whole chest, 3.6 x 3.6 x 5.2 mm);
    nothing said it expects 48^3 crops at 2.5 x 2.5 x 3.0 mm."""
    from core.phantom.maker import auto_spacing

    header = _header("demo_wingsnet.pt")
    assert expected_input(header)["extent_mm"] == [[120.0, 120.0, 144.0], [120.0, 120.0, 144.0]]
    warnings = input_warnings(header, auto_spacing((96, 96, 96)), (96, 96, 96))
    assert len(warnings) == 2
    assert "coarser along z" in warnings[0] and "2.5 x 2.5 x 3 mm" in warnings[0]
    assert "3.5x wider along z" in warnings[1] and "120 x 120 x 144 mm" in warnings[1]
    assert "--method growing" in warnings[1]
    assert input_warnings(header, (2.5, 2.5, 3.0), (48, 48, 48)) == []  # its own kind of input
    assert input_warnings(header, (1.25, 1.25, 1.5), (96, 96, 96)) == []  # finer but resampled, same view
    # on the native grid a finer CT is far from it too
    assert "finer" in input_warnings(header, (1.0, 1.0, 1.0), (144, 120, 120), resampled=False)[0]
    # the real-CT model saw whole chests: a chest CT is within what it knows
    assert input_warnings(_header("realct_wingsnet.pt"), (0.98, 0.98, 2.0), (141, 512, 512)) == []
    assert input_warnings({"card": {"data": "x", "kind": "real"}}, (1, 1, 1), (9, 9, 9)) == []  # nothing recorded


def test_a_trained_card_states_its_input_and_the_data_behind_its_validation(tmp_path):
    (tmp_path / "phantoms.json").write_text('{"difficulty": "normal"}')
    card = card_from_dataset(
        tmp_path,
        [(2.5, 2.0, 2.0)] * 3,
        2,
        1,
        {"td": 80.0, "bd": 70.0, "dsc": 75.0, "precision": 90.0},
        shapes_zyx=[(32, 32, 32)] * 3,
        val_shapes_zyx=[(32, 32, 32)],
        val_spacings_zyx=[(2.5, 2.0, 2.0)],
    )
    assert card["input"] == {
        "spacing_mm": [2.0, 2.0, 2.5],
        "extent_mm": [[64.0, 64.0, 80.0]] * 2,
        "size": "32^3 voxels",
    }
    text = card_summary({"card": card})
    assert "validation TD 80.0, BD 70.0, DSC 75.0, precision 90.0 on 1 phantom of 32^3 at 2 x 2 x 2.5 mm" in text
    assert "(not held out)" in text


def test_rewriting_a_card_keeps_the_weights_bit_identical(tmp_path):
    import torch

    from core.models import build_model
    from core.models.checkpoint import load_checkpoint, rewrite_header, save_checkpoint, weights_fingerprint

    torch.manual_seed(0)
    model = build_model("wingsnet", width=0.25)
    path = save_checkpoint(tmp_path / "m.pt", model, {"card": {"data": "old", "kind": "synthetic"}})
    before = weights_fingerprint(load_checkpoint(path).state_dict)
    rewrite_header(path, {"card": {"data": "new", "kind": "synthetic", "input": {"spacing_mm": [1.0, 1.0, 1.0]}}})
    after = load_checkpoint(path)
    assert after.header["card"]["data"] == "new" and weights_fingerprint(after.state_dict) == before
    from core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="'card.kind'"):  # a bad card is refused before anything is written
        rewrite_header(path, {"card": {"data": "x", "kind": "imaginary"}})
    assert load_checkpoint(path).header["card"]["data"] == "new"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_cards_are_complete(path: Path):
    header = read_header(path)
    card = header["card"]
    assert card["input"]["spacing_mm"] and len(card["input"]["extent_mm"]) == 2
    assert card["held_out_data"]["cases"] >= 1 and card["held_out_data"]["kind"] in ("phantom", "real")
    assert card["validation_data"]["cases"] >= 1


def test_the_panels_card_text_needs_no_torch_and_survives_a_damaged_card(tmp_path):
    """The Segment panel reads the card on the GUI thread: no torch import, and a damaged card gives a line
    that names the field (card_summary on {'spacing_mm': 'x'} raised a ValueError before)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; from core.models.card import checkpoint_card_text; "
        f"s, lines = checkpoint_card_text({str(MODELS / 'realct_wingsnet.pt')!r}); "
        "assert s.startswith('trained on'), s; assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    header = {"card": {"data": "x", "kind": "synthetic", "spacing_mm": "x"}}
    assert card_summary(header).startswith("damaged model card: 'card.spacing_mm'")
    assert input_warnings(header, (1, 1, 1), (9, 9, 9)) == []


def test_architecture_argument_types_in_the_registry_match_the_constructors():
    import inspect

    from core.models.registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        params = inspect.signature(spec.load_class()).parameters
        defaults = {k: type(p.default) for k, p in params.items() if p.default is not inspect.Parameter.empty}
        assert spec.arg_types == defaults, name


@pytest.mark.slow  # one phantom and one (small) inference through the command
def test_airway_segment_says_when_the_ct_is_far_from_the_models_input(tmp_path, capsys):
    """The card's check reaches the user: `airway phantom --size 96` -> `airway segment --method model`
    with the demo model warns (stdout and --json) that the CT is far from what the model saw."""
    from core.cli import main

    demo = MODELS / "demo_wingsnet.pt"
    if not demo.exists():
        pytest.skip("demo_wingsnet.pt not installed")
    assert main(["phantom", "--size", "96", "--seed", "1", "--out", str(tmp_path / "ph")]) == 0
    ct = next(p for p in (tmp_path / "ph").iterdir() if p.name.startswith("ct"))
    capsys.readouterr()
    out = tmp_path / "mask.nii.gz"
    args = ["segment", "-i", str(ct), "-o", str(out), "--method", "model", "--model", str(demo), "--backend", "torch"]
    main([*args, "--json"])
    report = json.loads(capsys.readouterr().out)
    text = json.dumps(report)
    assert "coarser along z" in text and "--method growing" in text
