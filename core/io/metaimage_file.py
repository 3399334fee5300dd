"""MetaImage (``.mha`` with the data inside, ``.mhd`` + a data file), ITK's own format, through SimpleITK.

ITK reads every flavour: detached data files, either byte order, compressed
data and slice lists (``ElementDataFile = LIST``).
"""

from __future__ import annotations

from pathlib import Path

from core.io import itk
from core.io.decoded import Decoded


def read(path: Path) -> Decoded:
    return itk.read_file(path, ".mhd" if path.name.lower().endswith(".mhd") else ".mha")


write = itk.write_file
