"""The names the labeller gives: central airways, lobar and segmental bronchi (Boyden / Jackson-Huber).

Right lung: RB1 apical, RB2 posterior, RB3 anterior (upper lobe); RB4 lateral, RB5 medial (middle
lobe); RB6 superior, RB7 medial basal, RB8 anterior basal, RB9 lateral basal, RB10 posterior basal
(lower lobe). Left lung: LB1+2 apicoposterior, LB3 anterior (upper division of the upper lobe);
LB4 superior and LB5 inferior lingular (lingula); LB6 superior, LB7 medial basal (usually one
stem with LB8: LB7+8), LB8 anterior basal, LB9 lateral basal, LB10 posterior basal (lower lobe).
Merged variants keep both numbers ("RB9+10").
"""

from __future__ import annotations

LOBES: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL")
CENTRAL: tuple[str, ...] = ("Trachea", "RMB", "LMB", "BronInt")  # BronInt = bronchus intermedius
LOBAR: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL", "Lingula")  # lobar bronchi (+ lingular bronchus)
# Stems between a lobar and its segmental bronchi: the left upper lobe's upper division (LB1+2 and
# LB3) and the lower lobes' basal trunks (below the superior segment).
SUBLOBAR: tuple[str, ...] = ("LULupper", "RLLbasal", "LLLbasal")
SEGMENTAL: tuple[str, ...] = (
    *(f"RB{k}" for k in range(1, 11)),
    "LB1+2",
    *(f"LB{k}" for k in range(3, 11)),
)
MERGED: tuple[str, ...] = ("RB9+10", "LB7+8", "LB9+10")
# Every name, in the order of their values in label images (value = index + 1).
ALL_NAMES: tuple[str, ...] = (*CENTRAL, *LOBAR, *SUBLOBAR, *SEGMENTAL, *MERGED)
SEGMENT_NAMES: frozenset[str] = frozenset((*SEGMENTAL, *MERGED))

_SEGMENT_LOBE = {
    **{f"RB{k}": "RUL" for k in (1, 2, 3)},
    **{f"RB{k}": "RML" for k in (4, 5)},
    **{f"RB{k}": "RLL" for k in (6, 7, 8, 9, 10)},
    "RB9+10": "RLL",
    "LB1+2": "LUL",
    **{f"LB{k}": "LUL" for k in (3, 4, 5)},
    **{f"LB{k}": "LLL" for k in (6, 7, 8, 9, 10)},
    "LB7+8": "LLL",
    "LB9+10": "LLL",
}
_OTHER_LOBE = {
    **{lobe: lobe for lobe in LOBES},
    "Lingula": "LUL",
    "LULupper": "LUL",
    "RLLbasal": "RLL",
    "LLLbasal": "LLL",
}


def lobe_of_name(name: str | None) -> str | None:
    """The lobe a named bronchus supplies ("RB6" -> "RLL", "Lingula" -> "LUL"); None above the lobes."""
    if not name:
        return None
    return _SEGMENT_LOBE.get(name) or _OTHER_LOBE.get(name)


def is_segmental(name: str | None) -> bool:
    return name in SEGMENT_NAMES


def side_of_name(name: str | None) -> str | None:
    """ "R" or "L" for a bronchus of one lung, None for the trachea and unknown names."""
    if name in ("RMB", "BronInt"):
        return "R"
    if name == "LMB":
        return "L"
    lobe = lobe_of_name(name)
    return lobe[0] if lobe else None


def is_known_name(name: str) -> bool:
    return name in ALL_NAMES


def name_value(name: str) -> int:
    """Integer value of ``name`` in label images (1-based; see :data:`ALL_NAMES`)."""
    return ALL_NAMES.index(name) + 1


UNNAMED_VALUE = 100  # airway no name reaches (label images); 0 is background
