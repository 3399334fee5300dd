"""Strip symbol tables from the bundle's ELF files, keeping any file that stripping would break.

    python installer/linux/strip_bundle.py dist/AirwayStudio

PyInstaller's own ``strip=True`` runs ``strip`` on every library, and that breaks the ones
auditwheel rewrote with patchelf (numpy.libs/, scipy.libs/...): the loader then refuses them
("ELF load command address/offset not page-aligned") and ``import numpy`` fails in the
bundle. Here each file is stripped into a copy (``strip --strip-unneeded``: the dynamic
symbols that linking needs stay), and the copy replaces the file only when every PT_LOAD
segment still has ``p_offset = p_vaddr (mod p_align)``, which is what the loader checks,
and it is smaller. Prints what was saved.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

PT_LOAD = 1
PAGE = 4096  # glibc also refuses a segment whose offset and address differ within a page


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def loads_aligned(path: Path) -> bool:
    """Every PT_LOAD segment of a 64-bit little-endian ELF file is congruent modulo its alignment."""
    data = path.read_bytes()
    if data[4] != 2 or data[5] != 1:  # only ELF64 LSB (x86-64, aarch64) is built here
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, _, _, p_align = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD and ((p_offset - p_vaddr) % PAGE or p_align > 1 and (p_offset - p_vaddr) % p_align):
            return False
    return True


def strip_file(path: Path, tmp: Path) -> int:
    """Bytes saved (0 when the file was kept as it was)."""
    copy = tmp / "stripped"
    shutil.copy2(path, copy)
    res = subprocess.run(["strip", "--strip-unneeded", str(copy)], capture_output=True)
    if res.returncode != 0 or not loads_aligned(copy):
        return 0
    saved = path.stat().st_size - copy.stat().st_size
    if saved <= 0:
        return 0
    mode = path.stat().st_mode
    shutil.move(copy, path)
    path.chmod(mode)
    return saved


def strip_bundle(bundle: Path, skip_executable: str = "AirwayStudio") -> tuple[int, int, int]:
    """(files stripped, files kept because stripping would break them, bytes saved)."""
    stripped = kept = saved = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(bundle.rglob("*")):
            # the executable carries its archive after the ELF image: strip would cut it off
            if path.is_symlink() or not path.is_file() or path.parent == bundle and path.name == skip_executable:
                continue
            if not is_elf(path):
                continue
            if not loads_aligned(path):
                kept += 1
                continue
            n = strip_file(path, Path(tmp))
            if n:
                stripped += 1
                saved += n
            else:
                kept += 1
    return stripped, kept, saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    args = p.parse_args(argv)
    if shutil.which("strip") is None:
        print("strip_bundle: no `strip` (binutils); bundle left as it is", file=sys.stderr)
        return 0
    stripped, kept, saved = strip_bundle(args.bundle)
    print(f"strip_bundle: {stripped} files stripped, {kept} left as they were, {saved / 2**20:.0f} MiB saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
