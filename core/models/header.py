"""Checks of a checkpoint header's fields, torch-free (the GUI thread reads headers too).

Every header field the code reads is checked here, once, when a checkpoint is
loaded (``core.models.checkpoint.load_checkpoint`` calls :func:`validate_header`):
a file edited by hand or written by another program gives one message naming
the field and the fix, never a ValueError deep inside segmentation (issue 27).
``core.models.card.checkpoint_card_text`` runs the same check for the Segment panel.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from core.errors import CheckpointError

KINDS = ("synthetic", "real", "mixed")
DATA_KINDS = ("phantom", "real")
METRIC_KEYS = ("td", "bd", "dsc", "precision", "sensitivity", "score")

_FIX = (
    "The checkpoint's header was edited or written by another program. Use the original file, "
    "or correct the field and save it again with core.models.checkpoint.save_checkpoint."
)


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(v: object) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, field: str, value: object, rule: str) -> None:
        self.items.append(f"'{field}' is {_show(value)}: {rule}")

    def dict_or_none(self, header: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
        value = header.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.add(key, value, "it must be an object (a JSON dict) or absent")
            return None
        return value

    def number(
        self, section: Mapping[str, Any], key: str, where: str, *, low: float | None = None, positive: bool = False
    ) -> None:
        if key not in section or section[key] is None:
            return
        v = section[key]
        if not is_number(v):
            self.add(where, v, "it must be a finite number")
        elif positive and not v > 0:
            self.add(where, v, "it must be greater than 0")
        elif low is not None and v < low:
            self.add(where, v, f"it must be at least {low:g}")

    def integer(self, section: Mapping[str, Any], key: str, where: str, low: int, high: int | None = None) -> None:
        if key not in section or section[key] is None:
            return
        v = section[key]
        if not _is_int(v):
            self.add(where, v, "it must be a whole number")
        elif v < low or (high is not None and v > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            self.add(where, v, f"it must be {span}")

    def spacing(self, section: Mapping[str, Any], key: str, where: str) -> None:
        v = section.get(key)
        if v is None:
            return
        if not (isinstance(v, list) and len(v) == 3 and all(is_number(x) and 0 < x <= 50 for x in v)):
            self.add(where, v, "it must be three voxel sizes in mm [x, y, z], each above 0 and at most 50")


def header_problems(header: Mapping[str, Any]) -> list[str]:
    """Every field of a checkpoint header that the code reads and that has the wrong type or range.

    Empty when the header is usable. Unknown fields are allowed (newer versions may add some).
    """
    out = _Problems()
    arch = header.get("architecture")
    if not isinstance(arch, str) or not arch.strip():
        out.add("architecture", arch, 'it must name the network (e.g. "wingsnet")')
    args = out.dict_or_none(header, "arch_args")
    if args is not None:
        types = _arch_types(arch if isinstance(arch, str) else "")
        for key, value in args.items():
            where = f"arch_args.{key}"
            kind = types.get(key)
            if kind is bool:
                if not isinstance(value, bool):
                    out.add(where, value, "it must be true or false")
            elif kind is int:
                if not _is_int(value):
                    out.add(where, value, "it must be a whole number")
            elif kind is float:
                if not is_number(value):
                    out.add(where, value, "it must be a finite number")
            elif isinstance(value, float) and not math.isfinite(value):
                out.add(where, value, "it must be a finite number")
    prep = out.dict_or_none(header, "preprocessing")
    if prep is not None:
        window = prep.get("window")
        if window is not None and not (
            isinstance(window, list)
            and len(window) == 2
            and all(is_number(v) for v in window)
            and window[0] < window[1]
        ):
            out.add("preprocessing.window", window, "it must be two HU values [low, high] with low < high")
        out.number(prep, "scale", "preprocessing.scale", positive=True)
        crop = prep.get("crop")
        if crop is not None and crop not in ("lung", "none"):
            out.add("preprocessing.crop", crop, 'it must be "lung" or "none"')
        out.integer(prep, "margin", "preprocessing.margin", 0, 1000)
        out.number(prep, "lung_threshold", "preprocessing.lung_threshold")
    inference = out.dict_or_none(header, "inference")
    if inference is not None:
        out.integer(inference, "window", "inference.window", 1, 4096)
        out.integer(inference, "step", "inference.step", 1, 4096)
        out.spacing(inference, "spacing", "inference.spacing")
    training = out.dict_or_none(header, "training")
    if training is not None:
        validation = training.get("validation")
        if validation is not None and not isinstance(validation, Mapping):
            out.add("training.validation", validation, "it must be an object or absent")
        elif validation is not None:
            out.integer(validation, "window", "training.validation.window", 1, 4096)
            out.integer(validation, "step", "training.validation.step", 1, 4096)
    out.integer(header, "stage", "stage", 0, 2)
    out.integer(header, "epoch", "epoch", 1)
    metrics = out.dict_or_none(header, "metrics")
    if metrics is not None:
        for key, value in metrics.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                out.add(f"metrics.{key}", value, "it must be a number")
    versions = out.dict_or_none(header, "versions")
    if versions is not None:
        for key, value in versions.items():
            if not isinstance(value, str):
                out.add(f"versions.{key}", value, "it must be a version string")
    created = header.get("created")
    if created is not None and not isinstance(created, str):
        out.add("created", created, "it must be an ISO 8601 date string")
    for key in ("train_cases", "val_cases"):
        names = header.get(key)
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            out.add(key, names, "it must be a list of case names")
    card = header.get("card")
    if card is not None:
        out.items.extend(card_problems(card))
    return out.items


def _arch_types(name: str) -> dict[str, type]:
    """The argument types of a registered architecture, from the registry (no torch import)."""
    from core.errors import ConfigError
    from core.models.registry import get_spec

    try:
        return dict(get_spec(name).arg_types)
    except ConfigError:
        return {}


def validate_header(header: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`CheckpointError` naming every header field of the wrong type or range.

    The one check ``load_checkpoint`` runs, so ``airway models --checkpoint``, ``airway segment``
    and the app refuse a damaged header with the same message.
    """
    problems = header_problems(header)
    if not problems:
        return
    if len(problems) == 1:
        what = f"The checkpoint's header field {problems[0]}."
    else:
        what = f"{len(problems)} fields of the checkpoint's header are wrong: " + "; ".join(problems) + "."
    raise CheckpointError(what, _FIX, path=None if path is None else os.fspath(path))


# -- the model card (core.models.card) ------------------------------------------------
def _xyz(v: object, low: float = 0.0) -> bool:
    return (
        isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and is_number(x) and x > low for x in v)
    )


def _dataset_problems(info: object, where: str) -> list[str]:
    if not isinstance(info, Mapping):
        return [f"'{where}' is {json.dumps(info, default=str)[:60]}: it must be an object"]
    out = []
    cases = info.get("cases")
    if cases is not None and not (isinstance(cases, int) and not isinstance(cases, bool) and cases >= 0):
        out.append(f"'{where}.cases' is {cases!r}: it must be a count of cases (0 or more)")
    if info.get("kind") is not None and info.get("kind") not in DATA_KINDS:
        out.append(f"'{where}.kind' is {info.get('kind')!r}: it must be one of {', '.join(DATA_KINDS)}")
    size = info.get("size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)
    ):
        out.append(f"'{where}.size' is {size!r}: it must be three voxel counts [z, y, x]")
    if info.get("spacing_mm") is not None and not _xyz(info.get("spacing_mm")):
        out.append(f"'{where}.spacing_mm' is {info.get('spacing_mm')!r}: it must be three voxel sizes in mm")
    if info.get("description") is not None and not isinstance(info.get("description"), str):
        out.append(f"'{where}.description' must be text")
    return out


def _metrics_problems(m: object, where: str) -> list[str]:
    if m is None:
        return []
    if not isinstance(m, Mapping):
        return [f"'{where}' is {json.dumps(m, default=str)[:60]}: it must be an object of metrics in percent"]
    return [
        f"'{where}.{k}' is {json.dumps(v, default=str)[:60]}: it must be a number (percent)"
        for k, v in m.items()
        if k in METRIC_KEYS and not is_number(v)
    ]


def card_problems(card: object) -> list[str]:
    """Every card field of the wrong type (field names as ``card.x.y``); empty when usable."""
    if not isinstance(card, Mapping):
        return [f"'card' is {json.dumps(card, default=str)[:60]}: it must be an object (a JSON dict) or absent"]
    out: list[str] = []
    for key in ("data", "notes"):
        if card.get(key) is not None and not isinstance(card.get(key), str):
            out.append(f"'card.{key}' is {card.get(key)!r}: it must be text")
    if card.get("kind") is not None and card.get("kind") not in KINDS:
        out.append(f"'card.kind' is {card.get('kind')!r}: it must be one of {', '.join(KINDS)}")
    cases = card.get("cases")
    if cases is not None:
        if not isinstance(cases, Mapping):
            out.append(f'\'card.cases\' is {cases!r}: it must be {{"train": N, "validation": N}}')
        else:
            for k, v in cases.items():
                if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                    out.append(f"'card.cases.{k}' is {v!r}: it must be a count of cases (0 or more)")
    if card.get("spacing_mm") is not None and not _xyz(card.get("spacing_mm")):
        out.append(f"'card.spacing_mm' is {card.get('spacing_mm')!r}: it must be three voxel sizes in mm [x, y, z]")
    expects = card.get("input")
    if expects is not None:
        if not isinstance(expects, Mapping):
            out.append(f"'card.input' is {expects!r}: it must be an object")
        else:
            if expects.get("spacing_mm") is not None and not _xyz(expects.get("spacing_mm")):
                out.append(f"'card.input.spacing_mm' is {expects.get('spacing_mm')!r}: it must be three voxel sizes")
            ext = expects.get("extent_mm")
            if ext is not None and not (isinstance(ext, list) and len(ext) == 2 and all(_xyz(e) for e in ext)):
                out.append(
                    f"'card.input.extent_mm' is {ext!r}: it must be [[x, y, z] smallest, [x, y, z] largest] in mm"
                )
            if expects.get("size") is not None and not isinstance(expects.get("size"), str):
                out.append("'card.input.size' must be text")
    out += _metrics_problems(card.get("validation"), "card.validation")
    out += _metrics_problems(card.get("held_out"), "card.held_out")
    for key in ("validation_data", "held_out_data"):
        if card.get(key) is not None:
            out += _dataset_problems(card.get(key), f"card.{key}")
    sets = card.get("held_out_sets")
    if sets is not None:
        if not isinstance(sets, list):
            out.append("'card.held_out_sets' must be a list")
        else:
            for i, entry in enumerate(sets):
                if not isinstance(entry, Mapping):
                    out.append(f"'card.held_out_sets[{i}]' must be an object with data and metrics")
                    continue
                out += _dataset_problems(entry.get("data"), f"card.held_out_sets[{i}].data")
                out += _metrics_problems(entry.get("metrics"), f"card.held_out_sets[{i}].metrics")
    return out
