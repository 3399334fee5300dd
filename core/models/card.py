"""Model cards: what a checkpoint was trained on, what it expects, and on what its figures were measured.

Kept in the checkpoint's header under ``card``. A model that has only seen
phantoms fails on real CT without saying so, and "held-out TD 90.8" means
little without "10 phantoms of 48^3 at 2.5 mm"; the card lets every consumer
(``airway models``, ``airway models --checkpoint``, the Segment panel, the
output gate's warnings, ``airway segment``'s input check) name the data next to
the figure.

Card keys (all optional except ``data`` and ``kind``):

- ``data``: one line describing the training data; ``kind``: ``synthetic``,
  ``real`` or ``mixed``; ``cases``: {``train``, ``validation``};
  ``spacing_mm``: median voxel spacing x, y, z of the training cases; ``notes``.
- ``input``: what the model expects: ``spacing_mm`` (x, y, z: the grid it runs
  on), ``extent_mm`` ([[x, y, z] smallest, [x, y, z] largest] field of view of
  its training volumes), ``size`` (text, e.g. ``"48^3 voxels"``).
- ``validation`` and ``held_out``: metrics in percent (``td``, ``bd``, ``dsc``,
  ``precision``); ``validation_data`` and ``held_out_data``: the data they were
  measured on (:func:`make_dataset_info`: ``cases``, ``kind`` phantom/real,
  ``size`` z, y, x, ``spacing_mm`` x, y, z, ``description``).
- ``held_out_sets``: further held-out figures, each ``{"data": {...}, "metrics": {...}}``
  (e.g. real CTs beside the phantoms).

This module imports neither torch nor Qt: the GUI thread reads cards with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.models.header import DATA_KINDS, KINDS, METRIC_KEYS, card_problems, header_problems
from core.models.header import is_number as _number

_METRIC_NAMES = {"td": "TD", "bd": "BD", "dsc": "DSC", "precision": "precision", "sensitivity": "sensitivity"}

#: ``airway segment`` warns when a CT's voxels are coarser than the model's by more than this factor
#: (resampling up cannot add detail that is not in the scan) or, on the native grid, finer or coarser.
SPACING_FACTOR = 1.5
#: ... or when its field of view lies outside the training volumes' by more than this factor.
EXTENT_FACTOR = 2.0

Card = dict[str, Any]
Header = Mapping[str, Any]


# --------------------------------------------------------------------------- #
# Making cards
# --------------------------------------------------------------------------- #
def make_dataset_info(
    cases: int,
    kind: str,
    size_zyx: Sequence[int] | None = None,
    spacing_xyz: Sequence[float] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """What a set of figures was measured on: ``cases`` of ``kind`` (phantom/real), ``size`` and spacing."""
    from core.errors import ConfigError

    if kind not in DATA_KINDS:
        raise ConfigError(f"Unknown data kind '{kind}'.", f"Use one of {', '.join(DATA_KINDS)}.")
    return {
        "cases": int(cases),
        "kind": kind,
        "size": None if size_zyx is None else [int(v) for v in size_zyx],
        "spacing_mm": None if spacing_xyz is None else [round(float(v), 3) for v in spacing_xyz],
        "description": str(description or ""),
    }


def make_card(
    data: str,
    kind: str,
    train_cases: int,
    val_cases: int = 0,
    spacing_xyz: Sequence[float] | None = None,
    validation: Mapping[str, Any] | None = None,
    held_out: Mapping[str, Any] | None = None,
    notes: str = "",
    *,
    input_spacing_xyz: Sequence[float] | None = None,
    extent_xyz: tuple[Sequence[float], Sequence[float]] | None = None,
    size: str = "",
    validation_data: Mapping[str, Any] | None = None,
    held_out_data: Mapping[str, Any] | None = None,
) -> Card:
    from core.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"Unknown training data kind '{kind}'.", f"Use one of {', '.join(KINDS)}.")
    card: Card = {
        "data": str(data),
        "kind": kind,
        "cases": {"train": int(train_cases), "validation": int(val_cases)},
        "spacing_mm": None if spacing_xyz is None else [round(float(v), 3) for v in spacing_xyz],
        "validation": _metrics(validation),
        "held_out": _metrics(held_out),
        "notes": str(notes or ""),
    }
    expects: dict[str, Any] = {}
    input_spacing = input_spacing_xyz if input_spacing_xyz is not None else spacing_xyz
    if input_spacing is not None:
        expects["spacing_mm"] = [round(float(v), 3) for v in input_spacing]
    if extent_xyz is not None:
        expects["extent_mm"] = [
            [round(float(v), 1) for v in extent_xyz[0]],
            [round(float(v), 1) for v in extent_xyz[1]],
        ]
    if size:
        expects["size"] = str(size)
    if expects:
        card["input"] = expects
    if validation_data is not None:
        card["validation_data"] = dict(validation_data)
    if held_out_data is not None:
        card["held_out_data"] = dict(held_out_data)
    return card


def _metrics(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not d:
        return None
    out: dict[str, Any] = {
        k: round(float(v), 1)
        for k, v in d.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k in METRIC_KEYS
    }
    if "cases" in d:
        out["cases"] = d["cases"]
    return out


def _size_text(sizes: Sequence[Sequence[int]]) -> str:
    """``48^3`` for one cubic size, ``48 x 64 x 64`` for one other, ``48^3 to 94 x 200 x 200`` for a range."""

    def one(s: Sequence[int]) -> str:
        return f"{s[0]}^3" if len(set(s)) == 1 else " x ".join(str(v) for v in s)

    unique = sorted({tuple(int(v) for v in s) for s in sizes}, key=lambda s: int(np.prod(s)))
    if not unique:
        return ""
    return one(unique[0]) if len(unique) == 1 else f"{one(unique[0])} to {one(unique[-1])}"


def card_from_dataset(
    data_path: str | Path,
    spacings_zyx: Sequence[Sequence[float]],
    train_cases: int,
    val_cases: int,
    validation: Mapping[str, Any] | None = None,
    *,
    shapes_zyx: Sequence[Sequence[int]] = (),
    val_shapes_zyx: Sequence[Sequence[int]] = (),
    val_spacings_zyx: Sequence[Sequence[float]] = (),
    input_spacing_xyz: Sequence[float] | None = None,
) -> Card:
    """The card ``airway train`` writes: data described from the dataset folder.

    A folder written by ``airway phantom-dataset`` (it holds ``phantoms.json``)
    is synthetic; otherwise the data are taken as real CT, described by the
    folder's ``dataset.json`` (nnU-Net/ATM'22 layout: ``name``, ``description``)
    when it has one. ``shapes_zyx`` (same order as ``spacings_zyx``) give the
    training volumes' sizes, from which the card states the field of view the
    model expects; ``val_*`` describe the validation cases behind the figures.
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
        spacing = [float(v) for v in np.median(np.asarray(spacings_zyx, float), axis=0)[::-1]]
    extent = None
    size = ""
    if len(shapes_zyx) and len(shapes_zyx) == len(spacings_zyx):
        mm = np.asarray(shapes_zyx, float) * np.asarray(spacings_zyx, float)  # z, y, x
        extent = (list(mm.min(axis=0)[::-1]), list(mm.max(axis=0)[::-1]))
        size = f"{_size_text(shapes_zyx)} voxels"
    validation_data = None
    if val_cases and len(val_shapes_zyx):
        val_sp = np.median(np.asarray(val_spacings_zyx, float), axis=0)[::-1] if len(val_spacings_zyx) else None
        validation_data = make_dataset_info(
            val_cases,
            "phantom" if kind == "synthetic" else "real",
            val_shapes_zyx[0] if len({tuple(s) for s in val_shapes_zyx}) == 1 else None,
            None if val_sp is None else list(val_sp),
            "validation cases of the run (they chose the checkpoint, so they are not held out)",
        )
    return make_card(
        data,
        kind,
        train_cases,
        val_cases,
        spacing,
        validation,
        input_spacing_xyz=input_spacing_xyz,
        extent_xyz=extent,
        size=size,
        validation_data=validation_data,
    )


# --------------------------------------------------------------------------- #
# Reading cards
# --------------------------------------------------------------------------- #
def get_card(header: Header | None) -> Card | None:
    card = (header or {}).get("card")
    return card if isinstance(card, dict) else None


def _fmt_metrics(m: Mapping[str, Any] | None) -> str:
    if not m:
        return ""
    return ", ".join(f"{name} {m[k]:.1f}" for k, name in _METRIC_NAMES.items() if _number(m.get(k)))


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def describe_data(info: Mapping[str, Any] | None) -> str:
    """``10 phantoms of 48^3 at 2.5 x 2.5 x 3 mm`` (or ``1 real CT ...``) from a dataset info."""
    if not info:
        return ""
    n = info.get("cases")
    kind = info.get("kind")
    if kind == "phantom":
        noun = "phantom" if n == 1 else "phantoms"
    elif kind == "real":
        noun = "real CT" if n == 1 else "real CTs"
    else:
        noun = "case" if n == 1 else "cases"
    text = f"{n} {noun}" if n is not None else noun
    size = info.get("size")
    if size:
        text += f" of {_size_text([size])}"
    if info.get("spacing_mm"):
        text += f" at {_mm(info['spacing_mm'])} mm"
    if info.get("description"):
        text += f" ({info['description']})"
    return text


def _held_out(card: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(figures, the data they were measured on) for every held-out set of a card."""
    out = []
    primary = _fmt_metrics(card.get("held_out"))
    if primary:
        data = describe_data(card.get("held_out_data"))
        if not data:  # cards written before held_out_data: a free-text "cases" entry
            cases = (card.get("held_out") or {}).get("cases")
            data = f"{cases}" if isinstance(cases, str) else (f"{cases} cases" if cases is not None else "")
        out.append((primary, data or "data not recorded"))
    for entry in card.get("held_out_sets") or []:
        if isinstance(entry, Mapping):
            figures = _fmt_metrics(entry.get("metrics"))
            if figures:
                out.append((figures, describe_data(entry.get("data")) or "data not recorded"))
    return out


def expected_input(header: Header | None) -> dict[str, Any]:
    """What the model expects: ``spacing_mm`` (x, y, z), ``extent_mm`` (smallest, largest), ``size``,
    ``resampled`` (the Predictor resamples a CT to ``spacing_mm`` by default). Empty if unknown."""
    header = header or {}
    card = get_card(header) or {}
    expects = dict(card.get("input") or {})
    inference_spacing = (
        (header.get("inference") or {}).get("spacing") if isinstance(header.get("inference"), Mapping) else None
    )
    if inference_spacing is not None:
        expects["spacing_mm"] = [float(v) for v in inference_spacing]
    elif "spacing_mm" not in expects and card.get("spacing_mm"):
        expects["spacing_mm"] = card["spacing_mm"]
    if expects:
        expects["resampled"] = inference_spacing is not None
    return expects


def _expects_text(expects: Mapping[str, Any]) -> str:
    parts = []
    if expects.get("spacing_mm"):
        how = " (CTs are resampled to it)" if expects.get("resampled") else ""
        parts.append(f"voxels of {_mm(expects['spacing_mm'])} mm{how}")
    ext = expects.get("extent_mm")
    if ext:
        lo, hi = ext
        span = _mm(lo) if lo == hi else f"{_mm(lo)} to {_mm(hi)}"
        size = f", {expects['size']}" if expects.get("size") else ""
        parts.append(f"a field of view of {span} mm{size}")
    return " and ".join(parts)


def _damaged(header: Header | None) -> str | None:
    """What is wrong with a header's card (None when it can be read): a card read without
    ``load_checkpoint`` (the Segment panel) must not break the text built from it."""
    card = (header or {}).get("card")
    problems = [] if card is None else card_problems(card)
    return f"damaged model card: {problems[0]}" if problems else None


def card_summary(header: Header | None) -> str:
    """One line: what the model was trained on, what it expects, its figures and their data
    (the Segment panel, the gate's warnings)."""
    damaged = _damaged(header)
    if damaged:
        return damaged
    card = get_card(header)
    if card is None:
        return "no model card: what this model was trained on is not recorded"
    sp = card.get("spacing_mm")
    spacing = f" at {_mm(sp)} mm" if sp else ""
    kind = card.get("kind", "?")
    text = f"trained on {card.get('data', '?')} ({kind}{spacing})"
    expects = _expects_text(expected_input(header))
    if expects:
        text += f"; expects {expects}"
    held = _held_out(card)
    if held:
        # one line: the first two sets; the rest are in card_lines (airway models --checkpoint, the tooltip)
        text += "; held-out " + "; ".join(f"{figures} on {data}" for figures, data in held[:2])
        if len(held) > 2:
            text += f"; {len(held) - 2} more held-out set(s) in its card"
    else:
        val = _fmt_metrics(card.get("validation"))
        if val:
            data = (
                describe_data(card.get("validation_data"))
                or f"{(card.get('cases') or {}).get('validation', '?')} validation cases"
            )
            text += f"; validation {val} on {data} (not held out)"
    return text


def card_lines(header: Header | None) -> list[str]:
    """The whole card as text lines (``airway models --checkpoint``, tooltips)."""
    card = get_card(header)
    if card is None or _damaged(header):
        return [card_summary(header)]
    cases = card.get("cases") or {}
    sp = card.get("spacing_mm")
    lines = [
        f"data: {card.get('data', '?')}",
        f"kind: {card.get('kind', '?')}",
        f"cases: {cases.get('train', '?')} training, {cases.get('validation', '?')} validation",
        f"spacing: {_mm(sp)} mm (x y z)" if sp else "spacing: not recorded",
        f"expects: {_expects_text(expected_input(header)) or 'not recorded'}",
    ]
    val = _fmt_metrics(card.get("validation"))
    if val:
        data = describe_data(card.get("validation_data"))
        lines.append(f"validation: {val}" + (f" on {data}" if data else ""))
    else:
        lines.append("validation: not recorded")
    held = _held_out(card)
    if held:
        lines += [f"held-out: {figures} on {data}" for figures, data in held]
    else:
        lines.append("held-out: not recorded")
    if card.get("notes"):
        lines.append(f"notes: {card['notes']}")
    return lines


def short_line(header: Header | None) -> str:
    """A few words for a listing (``airway models``): kind, data size, expected input, held-out figures."""
    card = get_card(header)
    if card is None or _damaged(header):
        return _damaged(header) or "no model card"
    parts = [str(card.get("kind", "?"))]
    expects = expected_input(header)
    if expects.get("spacing_mm"):
        parts.append(f"{_mm(expects['spacing_mm'])} mm")
    if expects.get("size"):
        parts.append(str(expects["size"]))
    held = _held_out(card)
    if held:
        parts.append(f"held-out {held[0][0]} on {held[0][1]}")
    return ", ".join(parts)


def read_header(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint's header without torch (for the GUI thread): the JSON string stored under
    ``header_json`` is read from the archive's pickle opcodes, nothing is unpickled. Not checked:
    :func:`checkpoint_card_text` checks it."""
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


def checkpoint_card_text(path: str | Path) -> tuple[str, list[str]]:
    """(one-line summary, whole card as lines) of a checkpoint file, read without torch and checked
    like ``load_checkpoint`` checks it: the Segment panel's model description.

    A file without a header, or with a damaged one, gives a summary that says so (and which field).
    """
    header = read_header(path)
    if header is None:
        return "not an Airway Studio checkpoint (no header)", []
    problems = header_problems(header)
    if problems:
        text = f"damaged checkpoint header: {problems[0]}" + (
            f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        )
        return text, problems
    return card_summary(header), card_lines(header)


# --------------------------------------------------------------------------- #
# Is this CT like what the model saw?
# --------------------------------------------------------------------------- #
def input_warnings(
    header: Header | None,
    spacing_xyz: Sequence[float],
    shape_zyx: Sequence[int],
    *,
    resampled: bool | None = None,
) -> list[str]:
    """Warnings when a CT is far from the input the model expects (its card's ``input``).

    ``spacing_xyz`` and ``shape_zyx``: the CT as read (before any resampling).
    ``resampled``: whether this run resamples the CT to the model's spacing
    (None: as the checkpoint recommends, i.e. when its header has ``inference.spacing``).
    A CT whose voxels are coarser than the model's by more than :data:`SPACING_FACTOR`
    (on the native grid: coarser or finer), or whose field of view lies outside the
    training volumes' by more than :data:`EXTENT_FACTOR`, gets one line each saying
    what differs and what to do. Empty when the card records nothing to compare.
    For ``airway segment``, the Segment panel and any other caller before inference.
    """
    if header_problems(header or {}):
        return []  # a damaged header is refused where it is loaded, with its own message
    expects = expected_input(header)
    if not expects:
        return []
    if resampled is None:
        resampled = bool(expects.get("resampled"))
    sp = [float(v) for v in spacing_xyz]
    shape_xyz = [int(v) for v in shape_zyx][::-1]
    extent = [n * s for n, s in zip(shape_xyz, sp)]
    seen = f"{' x '.join(str(n) for n in shape_xyz)} voxels of {_mm([round(v, 2) for v in sp])} mm"
    out = []
    want = expects.get("spacing_mm")
    if want:
        ratios = [s / w for s, w in zip(sp, want)]
        coarse = max(ratios) > SPACING_FACTOR
        fine = (not resampled) and min(ratios) < 1 / SPACING_FACTOR
        if coarse or fine:
            axis = int(np.argmax(ratios)) if coarse else int(np.argmin(ratios))
            how = "coarser" if coarse else "finer"
            factor = ratios[axis] if coarse else 1 / ratios[axis]
            fix = (
                "Resampling cannot add detail the scan does not have: expect missed branches; "
                "use region growing (--method growing) or a model trained on such scans."
                if coarse
                else "Resample it to the model's spacing (drop --spacing native) or use a model trained at this spacing."
            )
            out.append(
                f"This CT ({seen}) has voxels {factor:.1f}x {how} along {'xyz'[axis]} than the model was trained on "
                f"({_mm(want)} mm). {fix}"
            )
    ext = expects.get("extent_mm")
    if ext:
        lo, hi = ext
        over = [e / h for e, h in zip(extent, hi)]
        under = [l_ / e if e > 0 else math.inf for e, l_ in zip(extent, lo)]
        if max(over) > EXTENT_FACTOR or max(under) > EXTENT_FACTOR:
            wide = max(over) > EXTENT_FACTOR
            axis = int(np.argmax(over if wide else under))
            factor = (over if wide else under)[axis]
            trained = _mm(lo) if lo == hi else f"{_mm(lo)} to {_mm(hi)}"
            size = f", {expects['size']}" if expects.get("size") else ""
            out.append(
                f"This CT covers {_mm([round(v) for v in extent])} mm ({seen}), {factor:.1f}x "
                f"{'wider' if wide else 'narrower'} along {'xyz'[axis]} than the volumes the model was trained on "
                f"({trained} mm{size}). Its mask may be empty or wrong: check it, or use region growing "
                "(--method growing) or a model trained on such scans."
            )
    return out
