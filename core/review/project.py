"""Project files: a review's inputs and decisions as one JSON file (paths relative to it).

Format 2 keys region statuses by the regions' content keys (format 1 used list
positions; readers map those once, on the first analysis of the same files).

A project file is checked against :data:`PROJECT_FIELDS` as a whole before
anything of it is used: every field of a wrong type is named in one
:class:`~core.errors.InputError`, so a hand-edited or damaged file never leaves a
case half-opened. Unknown fields are ignored (a newer version may add some).

Predictions made in the app are written beside the project as side files
(``PROJECT_NAME.nii.gz``); those never replace a file that is already there
(:func:`side_file_targets`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from core.errors import InputError
from core.outputs import atomic_write_bytes, same_file

PROJECT_FORMAT = "airway-studio-project"
PROJECT_VERSION = 2

_FIX = "Fix the file or open the CT and reference directly."

# -- the schema: a checker per field returns what the field should be, or None when it is fine ----------------

Checker = Callable[[Any], str | None]


def _show(value: Any) -> str:
    text = f"'{value}'" if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _optional(check: Checker) -> Checker:
    def checked(v: Any) -> str | None:
        wrong = check(v) if v is not None else None
        return None if wrong is None else f"{wrong} or null"

    return checked


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) else "text"


def _path(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a file path (text)"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _int(v: Any) -> str | None:
    return None if _is_int(v) else "a whole number"


def _version(v: Any) -> str | None:
    return None if _is_int(v) and v >= 1 else "a whole number from 1"


def _number(v: Any) -> str | None:
    return None if _is_number(v) else "a number"


def _positive(v: Any) -> str | None:
    return None if _is_number(v) and v > 0 else "a positive number"


def _fraction(v: Any) -> str | None:
    return None if _is_number(v) and 0 <= v <= 1 else "a number from 0 to 1"


def _cursor(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 3 and all(_is_number(c) for c in v)
    return None if ok else "a list of 3 numbers"


def _mapping(value_check: Checker, what: str) -> Checker:
    def checked(v: Any) -> str | None:
        ok = isinstance(v, dict) and all(value_check(x) is None for x in v.values())
        return None if ok else what

    return checked


def _object(v: Any) -> str | None:
    return None if isinstance(v, dict) else "an object"


def _list(v: Any) -> str | None:
    return None if isinstance(v, list) else "a list"


def _names(v: Any) -> str | None:
    """Branch-name corrections (core.review.names.NamesLayer.to_json)."""
    what = (
        "an object of 'reference_key' (text) and 'corrections' (a list of objects of 'branch' (a whole number "
        "from 1), 'name' (text or null) and 'position_mm' (a list of 3 numbers))"
    )
    if not isinstance(v, dict) or not (v.get("reference_key") is None or isinstance(v["reference_key"], str)):
        return what
    items = v.get("corrections", [])
    ok = isinstance(items, list) and all(
        isinstance(c, dict)
        and _is_int(c.get("branch"))
        and c["branch"] >= 1
        and (c.get("name") is None or isinstance(c["name"], str))
        and _cursor(c.get("position_mm")) is None
        for c in items
    )
    return None if ok else what


# Top-level fields (all optional but ``format``): name -> checker. Paths are relative to the project file.
PROJECT_FIELDS: dict[str, Checker] = {
    "version": _version,
    "name": _optional(_text),
    "demo": _bool,
    "ct": _optional(_path),
    "reference": _optional(_path),
    "reference_selector": _optional(_text),
    "predictions": _list,
    "active_prediction": _int,
    "cursor": _optional(_cursor),
    "view": _optional(_object),
    "names": _optional(_names),
}
PREDICTION_FIELDS: dict[str, Checker] = {
    "name": _optional(_text),
    "path": _optional(_path),
    "source": _text,
    "statuses": _optional(_mapping(_text, "an object of region keys to status names")),
}
# what the app keeps of its views (app.main_window.view_state); read there without checks of its own
VIEW_FIELDS: dict[str, Checker] = {
    "display": _optional(_object),
    "zoom": _optional(_mapping(_positive, "an object of view names to positive numbers")),
    "tab": _int,
}
DISPLAY_FIELDS: dict[str, Checker] = {
    "window": _positive,
    "level": _number,
    "preset": _text,
    "show_overlay": _bool,
    "outline": _bool,
    "opacity": _fraction,
    "visible": _optional(_mapping(_bool, "an object of layer names to true or false")),
    "heatmap": _bool,
    "crosshair": _bool,
}


def _check_fields(data: dict[str, Any], fields: dict[str, Checker], prefix: str, wrong: list[str]) -> None:
    for key, check in fields.items():
        if key in data:
            expected = check(data[key])
            if expected is not None:
                wrong.append(f"field '{prefix}{key}' must be {expected}, got {_show(data[key])}")


def project_problems(data: dict[str, Any]) -> list[str]:
    """Every field of ``data`` (a parsed project) that does not fit the schema, one sentence each."""
    wrong: list[str] = []
    _check_fields(data, PROJECT_FIELDS, "", wrong)
    version = data.get("version", 1)
    predictions = data.get("predictions")
    for i, pred in enumerate(predictions if isinstance(predictions, list) else []):
        where = f"predictions[{i}]"
        if not isinstance(pred, dict):
            wrong.append(f"field '{where}' must be an object, got {_show(pred)}")
            continue
        _check_fields(pred, PREDICTION_FIELDS, f"{where}.", wrong)
        statuses = pred.get("statuses")
        if _is_int(version) and version < 2 and isinstance(statuses, dict):
            # format 1 keyed statuses by the region's position in the list
            bad = [k for k in statuses if not k.isdigit()]
            if bad:
                wrong.append(
                    f"field '{where}.statuses' must have region numbers as keys (format 1), got {_show(bad[0])}"
                )
    view = data.get("view")
    if isinstance(view, dict):
        _check_fields(view, VIEW_FIELDS, "view.", wrong)
        if isinstance(view.get("display"), dict):
            _check_fields(view["display"], DISPLAY_FIELDS, "view.display.", wrong)
    return wrong


# -- reading and writing ---------------------------------------------------------------------------------------


def write_project(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write a project dict atomically (a temporary file, then a rename)."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(data, indent=2).encode("utf-8"))
    return path


def read_project(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check a project file; paths come back absolute.

    Raises one :class:`InputError` naming every wrong field before any of the file is used.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError("The project file does not exist.", "Check the path.", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"The project file is not valid JSON ({exc}).", "Open an Airway Studio project (.json).", path=path
        ) from None
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise InputError(
            "This JSON file is not an Airway Studio project.", "Open a project saved by Airway Studio.", path=path
        )
    version = data.get("version")
    if _is_int(version) and version > PROJECT_VERSION:
        raise InputError(
            f"The project was saved by a newer Airway Studio (format {version}).",
            "Update Airway Studio to open it.",
            path=path,
        )
    wrong = project_problems(data)
    if wrong:
        raise InputError("; ".join(wrong), _FIX, path=path)
    base = path.resolve().parent

    def absolute(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p)
        return str(q if q.is_absolute() else (base / q).resolve())

    data["ct"] = absolute(data.get("ct"))
    data["reference"] = absolute(data.get("reference"))
    for p in data.get("predictions", []):
        p["path"] = absolute(p.get("path"))
    return data


# -- side files ------------------------------------------------------------------------------------------------


def side_file_path(project_path: str | os.PathLike[str], prediction_name: str) -> Path:
    """Where a prediction made in the app is written when its project is saved."""
    project_path = Path(project_path)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in prediction_name)
    return project_path.with_name(f"{project_path.stem}_{safe}.nii.gz")


def side_file_targets(
    project_path: str | os.PathLike[str],
    names: Sequence[str],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> list[Path]:
    """The files predictions made in the app (``names``) are saved to beside the project, checked.

    Every target is checked before the caller writes any: a file of that name
    that is already there is refused, never replaced (it is not one of this
    project's files: a project stores only paths, so nothing says what the file
    is, and a ``.bak`` could keep only one version of it), and an input of the
    case is never written over. Two predictions whose names give one file name
    get ``-2``, ``-3``...
    """
    targets: list[Path] = []
    for name in names:
        target = side_file_path(project_path, name or "prediction")
        n = 1
        while target in targets:
            n += 1
            target = side_file_path(project_path, f"{name or 'prediction'}-{n}")
        targets.append(target)
    given = [Path(p) for p in inputs if p]
    for target in targets:
        for inp in given:
            if same_file(target, inp):
                raise InputError(
                    f"The prediction file {target.name} would be written over an opened input ({inp}).",
                    "Save the project under another name.",
                    path=target,
                )
        if target.exists() or target.is_symlink():
            raise InputError(
                f"{target.name} is already there and is not one of this project's files; the project's "
                "prediction would replace it, so nothing was saved",
                f"Save the project under another name, or move {target.name} away.",
                path=target,
            )
    return targets
