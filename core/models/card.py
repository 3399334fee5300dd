"""Model cards: what a checkpoint was trained on, kept in its header under ``card``.

A model that has only seen phantoms fails on real CT without saying so; the
card lets every consumer (``airway models --checkpoint``, the Segment panel,
the output gate's warnings) name the training data next to the result.

Card keys: ``data`` (one line describing the data), ``kind`` (``synthetic``,
``real`` or ``mixed``), ``cases`` ({``train``, ``validation``}), ``spacing_mm``
(median voxel spacing x, y, z of the training cases), ``validation`` and
``held_out`` (metrics in percent, or None), ``notes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KINDS = ("synthetic", "real", "mixed")


def make_card(
    data: str,
    kind: str,
    train_cases: int,
    val_cases: int = 0,
    spacing_xyz: Sequence[float] | None = None,
    validation: dict | None = None,
    held_out: dict | None = None,
    notes: str = "",
) -> dict:
    from core.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"Unknown training data kind '{kind}'.", f"Use one of {', '.join(KINDS)}.")
    return {
        "data": str(data),
        "kind": kind,
        "cases": {"train": int(train_cases), "validation": int(val_cases)},
        "spacing_mm": None if spacing_xyz is None else [round(float(v), 3) for v in spacing_xyz],
        "validation": _metrics(validation),
        "held_out": _metrics(held_out),
        "notes": str(notes or ""),
    }


def _metrics(d: dict | None) -> dict | None:
    if not d:
        return None
    return {
        k: round(float(v), 1)
        for k, v in d.items()
        if isinstance(v, (int, float)) and k in ("td", "bd", "dsc", "precision", "sensitivity", "score")
    } | {k: v for k, v in d.items() if k == "cases"}


def card_from_dataset(
    data_path: str | Path,
    spacings_zyx: Sequence[Sequence[float]],
    train_cases: int,
    val_cases: int,
    validation: dict | None = None,
) -> dict:
    """The card ``airway train`` writes: data described from the dataset folder.

    A folder written by ``airway phantom-dataset`` (it holds ``phantoms.json``)
    is synthetic; otherwise the data are taken as real CT, described by the
    folder's ``dataset.json`` (nnU-Net/ATM'22 layout: ``name``, ``description``)
    when it has one.
    """
    root = Path(data_path)
    folder = root if root.is_dir() else root.parent
    kind = "real"
    data = f"{train_cases + val_cases} labelled CTs from {folder.name or str(folder)}"
    if (folder / "phantoms.json").is_file():
        kind = "synthetic"
        data = f"{train_cases + val_cases} generated airway phantoms (airway phantom-dataset, {folder.name})"
        try:
            info = json.loads((folder / "phantoms.json").read_text(encoding="utf-8"))
            if isinstance(info, dict) and info.get("difficulty"):
                data += f", difficulty {info['difficulty']}"
        except (OSError, ValueError):
            pass
    elif (folder / "dataset.json").is_file():
        try:
            info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
            text = " - ".join(str(info[k]) for k in ("name", "description") if info.get(k))
            if text:
                data = f"{train_cases + val_cases} labelled CTs: {text}"
        except (OSError, ValueError):
            pass
    spacing = None
    if len(spacings_zyx):
        spacing = list(np.median(np.asarray(spacings_zyx, float), axis=0)[::-1])
    return make_card(data, kind, train_cases, val_cases, spacing, validation)


def get_card(header: dict | None) -> dict | None:
    card = (header or {}).get("card")
    return card if isinstance(card, dict) else None


def _fmt_metrics(m: dict | None) -> str:
    if not m:
        return ""
    names = {"td": "TD", "bd": "BD", "dsc": "DSC", "precision": "precision"}
    return ", ".join(f"{names[k]} {m[k]:.1f}" for k in names if k in m)


def card_summary(header: dict | None) -> str:
    """One line: what the model was trained on (the Segment panel, the gate's warnings)."""
    card = get_card(header)
    if card is None:
        return "no model card: what this model was trained on is not recorded"
    sp = card.get("spacing_mm")
    spacing = f" at {' x '.join(f'{v:g}' for v in sp)} mm" if sp else ""
    kind = card.get("kind", "?")
    text = f"trained on {card.get('data', '?')} ({kind}{spacing})"
    held = _fmt_metrics(card.get("held_out"))
    if held:
        text += f"; held-out {held}"
    return text


def card_lines(header: dict | None) -> list[str]:
    """The whole card as text lines (``airway models --checkpoint``, tooltips)."""
    card = get_card(header)
    if card is None:
        return [card_summary(header)]
    cases = card.get("cases") or {}
    sp = card.get("spacing_mm")
    lines = [
        f"data: {card.get('data', '?')}",
        f"kind: {card.get('kind', '?')}",
        f"cases: {cases.get('train', '?')} training, {cases.get('validation', '?')} validation",
        f"spacing: {' x '.join(f'{v:g}' for v in sp)} mm (x y z)" if sp else "spacing: not recorded",
        f"validation: {_fmt_metrics(card.get('validation')) or 'not recorded'}",
        f"held-out: {_fmt_metrics(card.get('held_out')) or 'not recorded'}",
    ]
    if card.get("notes"):
        lines.append(f"notes: {card['notes']}")
    return lines


def read_header(path: str | Path) -> dict | None:
    """A checkpoint's header without torch (for the GUI thread): the JSON string stored under
    ``header_json`` is read from the archive's pickle opcodes, nothing is unpickled."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            data = z.read(name)
        previous = None
        for _op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                if previous == "header_json":
                    header = json.loads(arg)
                    return header if isinstance(header, dict) else None
                previous = arg
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return None
