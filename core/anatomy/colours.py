"""One colour per name: a hue per lobe, shades of it for the lobe's stems and segments.

Used by the label image's colour tables (3D Slicer ``.ctbl``, ITK-SNAP label descriptions) and by
the app's 3D view, so a bronchus has the same colour everywhere.
"""

from __future__ import annotations

import colorsys

from core.anatomy.names import ALL_NAMES, UNNAMED_VALUE, lobe_of_name, name_value

RGB = tuple[int, int, int]

_LOBE_HUE = {"RUL": 0.0, "RML": 0.11, "RLL": 0.30, "LUL": 0.58, "LLL": 0.78}
_CENTRAL: dict[str, RGB] = {
    "Trachea": (230, 230, 220),
    "RMB": (250, 190, 190),
    "BronInt": (250, 215, 170),
    "LMB": (180, 200, 250),
}
UNNAMED_COLOUR: RGB = (150, 150, 150)


def _rgb(h: float, lightness: float, saturation: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, lightness, saturation)
    return (round(r * 255), round(g * 255), round(b * 255))


def _table() -> dict[str, RGB]:
    out: dict[str, RGB] = dict(_CENTRAL)
    family: dict[str, list[str]] = {}
    for name in ALL_NAMES:
        lobe = lobe_of_name(name)
        if name in out or lobe is None:
            continue
        family.setdefault(lobe, []).append(name)
    for lobe, names in family.items():
        hue = _LOBE_HUE[lobe]
        for k, name in enumerate(names):
            if name == lobe:
                out[name] = _rgb(hue, 0.45, 0.85)
                continue
            # alternate lighter and darker shades, nudging the hue, so neighbours differ
            light = (0.32, 0.62, 0.42, 0.72, 0.52)[k % 5]
            out[name] = _rgb(hue + 0.035 * ((k % 3) - 1), light, 0.75)
    return out


COLOURS: dict[str, RGB] = _table()


def colour_of(name: str | None) -> RGB:
    return COLOURS.get(name or "", UNNAMED_COLOUR)


def colour_rows() -> list[tuple[int, str, RGB]]:
    """(value, name, colour) for every value of a label image, background excluded."""
    rows = [(name_value(n), n, COLOURS[n]) for n in ALL_NAMES]
    rows.append((UNNAMED_VALUE, "unnamed", UNNAMED_COLOUR))
    return rows


def slicer_ctbl() -> str:
    """3D Slicer colour table (``.ctbl``): ``value name R G B A`` lines."""
    lines = ["# Airway Studio bronchus names", "# value name R G B A", "0 background 0 0 0 0"]
    lines += [f"{v} {n} {r} {g} {b} 255" for v, n, (r, g, b) in colour_rows()]
    return "\n".join(lines) + "\n"


def itksnap_labels() -> str:
    """ITK-SNAP label description file: ``IDX -R- -G- -B- -A-- VIS MSH "LABEL"`` lines."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (Airway Studio bronchus names)",
        "# Columns: IDX -R- -G- -B- -A-- VIS MSH LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    lines += [f'{v:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{n}"' for v, n, (r, g, b) in colour_rows()]
    return "\n".join(lines) + "\n"
