"""NRRD (``.nrrd``, detached ``.nhdr``) through SimpleITK's NrrdImageIO.

ITK turns the header's ``space`` (RAS, LAS, LPS) into LPS and takes the
``spacings`` (or 1 mm) along the identity when there are no ``space
directions``; a vector axis (``kinds: vector``) is refused by the shared check.
"""

from __future__ import annotations

from pathlib import Path

from core.io import itk
from core.io.decoded import Decoded


def read(path: Path) -> Decoded:
    return itk.read_file(path, ".nhdr" if path.name.lower().endswith(".nhdr") else ".nrrd")


write = itk.write_file
