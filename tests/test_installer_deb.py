"""The .deb builder (installer/linux/make_deb.py) on a fake bundle: control file, layout, dpkg-deb.

The real bundle is built and installed/removed by installer/linux/test_deb.sh (minutes, root).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "installer" / "linux"))
import make_deb  # noqa: E402


def parse_control(text: str) -> dict[str, str]:
    fields, key = {}, None
    for line in text.splitlines():
        if line.startswith(" "):
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(": ")
            fields[key] = value
    return fields


@pytest.fixture
def bundle(tmp_path) -> Path:
    b = tmp_path / "AirwayStudio"
    (b / "_internal" / "resources").mkdir(parents=True)
    exe = b / "AirwayStudio"
    exe.write_text("#!/bin/sh\necho 'Airway Studio 9.9'\n")
    exe.chmod(0o755)
    (b / "_internal" / "resources" / "THIRD_PARTY_NOTICES.txt").write_text("THIRD-PARTY NOTICES\nedt LGPL\n")
    (b / "install.sh").write_text("#!/bin/sh\n")
    return b


def test_control_file_has_the_required_fields_and_gl_xcb_depends():
    fields = parse_control(make_deb.control_text("0.1.0", 123456))
    for key in ("Package", "Version", "Architecture", "Maintainer", "Installed-Size", "Depends", "Description"):
        assert fields.get(key), key
    assert fields["Package"] == "airway-studio" and fields["Architecture"] == "amd64"
    assert fields["Installed-Size"] == "123456"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    for lib in ("libgl1", "libegl1", "libxkbcommon-x11-0", "libxcb-cursor0", "libfontconfig1", "libdbus-1-3"):
        assert lib in depends
    # extended description lines start with a space; an empty one is " ."
    assert all(line.startswith(" ") for line in fields["Description"].splitlines()[1:])
    assert "\n .\n" in fields["Description"]


@pytest.mark.parametrize(
    "pep440, deb",
    [("0.1.0", "0.1.0"), ("1.2.0rc1", "1.2.0~rc1"), ("1.2.0.dev3", "1.2.0~dev3"), ("1.0+cpu", "1.0+local.cpu")],
)
def test_versions_sort_like_debian_expects(pep440, deb):
    assert make_deb.debian_version(pep440) == deb


def test_desktop_entry_runs_the_packaged_launcher_with_the_icon():
    entry = make_deb.desktop_entry()
    assert "\nExec=airway-studio %F\n" in entry and "\nIcon=airway-studio\n" in entry


def test_stage_lays_out_opt_bin_menu_icons_and_copyright(bundle, tmp_path):
    root = make_deb.stage(bundle, tmp_path / "root", "0.1.0")
    opt = root / "opt" / "airway-studio"
    assert (opt / "AirwayStudio").is_file() and not (opt / "install.sh").exists()
    for name in ("airway", "airway-studio"):
        link = root / "usr" / "bin" / name
        assert link.is_symlink() and str(link.readlink()) == "/opt/airway-studio/AirwayStudio"
    assert (root / "usr/share/applications/airway-studio.desktop").is_file()
    assert (root / "usr/share/icons/hicolor/scalable/apps/airway-studio.svg").is_file()
    assert (root / "usr/share/icons/hicolor/256x256/apps/airway-studio.png").is_file()
    copyright_text = (root / "usr/share/doc/airway-studio/copyright").read_text()
    assert "MIT" in copyright_text and "THIRD-PARTY NOTICES" in copyright_text
    md5 = (root / "DEBIAN" / "md5sums").read_text()
    assert "  opt/airway-studio/AirwayStudio\n" in md5 and "DEBIAN" not in md5
    assert (root / "DEBIAN" / "postinst").stat().st_mode & 0o111


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")
def test_dpkg_deb_builds_a_package_with_that_content(bundle, tmp_path):
    root = make_deb.stage(bundle, tmp_path / "root", "0.1.0")
    deb = make_deb.build(root, tmp_path / "out", "0.1.0", compression="gzip")
    assert deb.name == "airway-studio_0.1.0_amd64.deb"
    info = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Version", "Depends"], capture_output=True, text=True, check=True
    ).stdout
    assert "Package: airway-studio" in info and "libxcb-cursor0" in info
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "./usr/bin/airway -> /opt/airway-studio/AirwayStudio" in listing
    assert "root/root" in listing  # --root-owner-group: not the builder's uid


def test_libc_floor_is_the_newest_glibc_symbol_version_in_the_bundle(bundle):
    (bundle / "_internal" / "liba.so").write_bytes(b"\x7fELF" + b"\0" * 8 + b"GLIBC_2.17\0GLIBC_2.34\0GLIBC_2.2.5\0")
    (bundle / "_internal" / "notes.txt").write_bytes(b"GLIBC_2.99\0")  # not an ELF file
    assert make_deb.glibc_floor(bundle) == "2.34"
    fields = parse_control(make_deb.control_text("0.1.0", 1, glibc="2.34"))
    assert fields["Depends"].startswith("libc6 (>= 2.34), ")


def _elf64(loads: list[tuple[int, int, int]]) -> bytes:
    """A minimal ELF64 LSB header with PT_LOAD program headers (offset, vaddr, align)."""
    import struct

    phoff, phentsize = 64, 56
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 0x20, phoff)
    struct.pack_into("<HH", head, 0x36, phentsize, len(loads))
    phdrs = b"".join(struct.pack("<IIQQQQQQ", 1, 5, off, va, va, 0, 0, align) for off, va, align in loads)
    return bytes(head) + phdrs


def test_stripper_refuses_files_the_loader_would_reject(tmp_path):
    sys.path.insert(0, str(ROOT / "installer" / "linux"))
    import strip_bundle

    good = tmp_path / "good.so"
    good.write_bytes(_elf64([(0, 0, 0x1000), (0x2000, 0x402000, 0x1000)]))
    bad = tmp_path / "bad.so"  # what `strip` makes of a patchelf'd library: offset and address out of step
    bad.write_bytes(_elf64([(0, 0, 0x1000), (0x2100, 0x402000, 0x1000)]))
    assert strip_bundle.is_elf(good) and strip_bundle.loads_aligned(good)
    assert not strip_bundle.loads_aligned(bad)


@pytest.mark.skipif(
    shutil.which("strip") is None or shutil.which("cc") is None, reason="needs binutils and a C compiler"
)
def test_stripper_shrinks_a_real_library_and_leaves_the_executable(tmp_path):
    sys.path.insert(0, str(ROOT / "installer" / "linux"))
    import strip_bundle

    bundle = tmp_path / "AirwayStudio"
    (bundle / "_internal").mkdir(parents=True)
    src = tmp_path / "a.c"
    src.write_text(
        "int answer(void) { return 42; }\n"
        + "".join(f"static int f{i}(void) {{ return {i}; }}\nint g{i}(void) {{ return f{i}(); }}\n" for i in range(200))
    )
    lib = bundle / "_internal" / "liba.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-g", "-o", str(lib), str(src)], check=True)
    exe = bundle / "AirwayStudio"
    shutil.copy2(lib, exe)  # stands in for the bootloader + archive, which must never be stripped
    before, exe_before = lib.stat().st_size, exe.read_bytes()
    stripped, kept, saved = strip_bundle.strip_bundle(bundle)
    assert stripped == 1 and saved == before - lib.stat().st_size > 0
    assert exe.read_bytes() == exe_before
    dyn = subprocess.run(["nm", "-D", str(lib)], capture_output=True, text=True, check=True).stdout
    assert " T answer" in dyn  # what linking needs stays
