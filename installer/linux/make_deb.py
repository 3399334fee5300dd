"""Build a Debian/Ubuntu package from the PyInstaller bundle with dpkg-deb.

    python installer/linux/make_deb.py --bundle dist/AirwayStudio --out dist [--version V]

Layout: the bundle in /opt/airway-studio, ``airway`` and ``airway-studio`` in
/usr/bin (symlinks to the one executable: it is the CLI when given a subcommand,
else the GUI), a menu entry and the icon (SVG + 256 px PNG) in the hicolor theme,
and THIRD_PARTY_NOTICES as the package's copyright file. ``Depends`` names the
system libraries the bundle links to but does not carry (GL, EGL, X11/xcb, fontconfig,
GLib, D-Bus; see :data:`DEPENDS` and ``--scan`` below). Everything the package installs
is in its file list, so ``dpkg -r`` removes it all; the user's settings and the
inference cache in their home are theirs and stay.

``--scan`` prints the bundle's shared libraries that come from the system (ldd),
with the Debian package of each (dpkg -S): how :data:`DEPENDS` was made.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = "airway-studio"
PREFIX = "/opt/airway-studio"
EXECUTABLE = "AirwayStudio"
#: Runtime libraries from the system, by Debian/Ubuntu package name (libc6 is added with the
#: version the bundle's binaries need, :func:`glibc_floor`). ``--scan`` on the bundle shows that
#: PyInstaller copies most of the X11/xcb/xkbcommon/fontconfig/GLib/D-Bus libraries into it and
#: leaves out only libc, GL/EGL/GLX (driver-specific), libxcb and libwayland-client; the mesa DRI
#: drivers are loaded by libGL at run time and are not in ldd's list at all. The rest of the list
#: is the Qt xcb platform plugin's documented set: their config files and the fonts that the
#: bundled copies read come with these packages, and a trimmed bundle may drop a copy.
DEPENDS = (
    "libgl1",
    "libegl1",
    "libgl1-mesa-dri",
    "libfontconfig1",
    "libfreetype6",
    "libglib2.0-0 | libglib2.0-0t64",
    "libdbus-1-3",
    "libx11-6",
    "libx11-xcb1",
    "libxext6",
    "libxrender1",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
    "libxcb1",
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-xkb1",
)
DESCRIPTION = """Pulmonary airway segmentation and review for chest CT
 Airway Studio segments the airway tree in chest CT with WingsNet trained with the
 General Union Loss (Zheng et al., IEEE TMI 2021), shows the result in slice and 3D
 views with the ATM'22 airway metrics, and trains new models. The `airway` command
 runs the same engine from the command line. CPU inference uses ONNX Runtime.
 .
 Bundles its own Python, PyTorch (CPU), Qt for Python, VTK and SimpleITK (ITK, GDCM); the
 licences of every bundled component are in /usr/share/doc/airway-studio/copyright."""

POSTINST = """#!/bin/sh
set -e
# menu and icon caches: optional tools, a desktop without them rescans on its own
if [ "$1" = "configure" ]; then
  command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
  command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
fi
exit 0
"""
POSTRM = """#!/bin/sh
set -e
if [ "$1" = "remove" ] || [ "$1" = "purge" ]; then
  command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
  command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
fi
exit 0
"""


def debian_version(version: str) -> str:
    """A PEP 440 version as a Debian one: pre-releases sort before the release (``~``)."""
    v = re.sub(r"(\d)(a|b|rc)(\d+)", r"\1~\2\3", version)
    v = v.replace(".dev", "~dev").replace("+", "+local.")
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~-]*", v):
        raise ValueError(f"cannot make a Debian version of {version!r}")
    return v


def glibc_floor(bundle: Path) -> str:
    """Highest GLIBC_2.N symbol version any ELF file in the bundle asks for (the build machine's glibc at most)."""
    best = (2, 17)
    pattern = re.compile(rb"GLIBC_2\.(\d+)(?:\.(\d+))?\x00")
    for p in bundle.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
                data = f.read()
            for m in pattern.finditer(data):
                best = max(best, (2, int(m.group(1))))
    return f"{best[0]}.{best[1]}"


def control_text(
    version: str, installed_kib: int, arch: str = "amd64", depends: tuple[str, ...] = DEPENDS, glibc: str = "2.17"
) -> str:
    fields = {
        "Package": PACKAGE,
        "Version": debian_version(version),
        "Architecture": arch,
        "Maintainer": "Airway Studio developers <airway-studio@example.invalid>",
        "Installed-Size": str(installed_kib),
        "Depends": ", ".join((f"libc6 (>= {glibc})", *depends)),
        "Section": "science",
        "Priority": "optional",
        "Description": DESCRIPTION,
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def desktop_entry(source: Path = HERE / "airway-studio.desktop") -> str:
    """The menu entry with Exec pointing at the packaged launcher."""
    text = source.read_text(encoding="utf-8")
    return re.sub(r"^Exec=.*$", "Exec=airway-studio %F", text, flags=re.M)


def _tree_kib(root: Path) -> int:
    # what dpkg's Installed-Size means: KiB, each file rounded up
    return sum(-(-p.lstat().st_size // 1024) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def stage(bundle: Path, root: Path, version: str, notices: Path | None = None) -> Path:
    """Lay out the package tree under ``root`` (emptied first); returns ``root``."""
    if not (bundle / EXECUTABLE).is_file():
        raise FileNotFoundError(f"no {EXECUTABLE} in {bundle}: build the bundle first")
    if root.exists():
        shutil.rmtree(root)
    opt = root / PREFIX.lstrip("/")
    shutil.copytree(bundle, opt, symlinks=True)
    # the tar.gz's per-user installer makes no sense in a system package
    for extra in ("install.sh", "airway-studio.desktop"):
        (opt / extra).unlink(missing_ok=True)
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True)
    for name in ("airway", "airway-studio"):
        (bindir / name).symlink_to(f"{PREFIX}/{EXECUTABLE}")
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    (apps / "airway-studio.desktop").write_text(desktop_entry(), encoding="utf-8")
    icons = ROOT / "resources" / "icons"
    for sub, src, name in (
        ("scalable", "airway_studio.svg", "airway-studio.svg"),
        ("256x256", "airway_studio.png", "airway-studio.png"),
    ):
        dest = root / "usr" / "share" / "icons" / "hicolor" / sub / "apps"
        dest.mkdir(parents=True)
        shutil.copy2(icons / src, dest / name)
    doc = root / "usr" / "share" / "doc" / PACKAGE
    doc.mkdir(parents=True)
    notices = notices or next(iter(sorted(opt.rglob("THIRD_PARTY_NOTICES.txt"))), None)
    own = "Airway Studio is licensed under the MIT licence.\n\n"
    (doc / "copyright").write_text(own + (notices.read_text(encoding="utf-8") if notices else ""), encoding="utf-8")
    for p in root.rglob("*"):  # dpkg-deb wants 0755 dirs and no group/other write bits
        if p.is_symlink():
            continue
        p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control_text(version, _tree_kib(root), glibc=glibc_floor(opt)), encoding="utf-8")
    for name, text in (("postinst", POSTINST), ("postrm", POSTRM)):
        (debian / name).write_text(text, encoding="utf-8")
        (debian / name).chmod(0o755)
    sums = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and "DEBIAN" not in p.relative_to(root).parts:
            sums.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n")
    (debian / "md5sums").write_text("".join(sums), encoding="utf-8")
    (debian / "md5sums").chmod(0o644)
    return root


def build(root: Path, out_dir: Path, version: str, compression: str = "zstd", level: int | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"{PACKAGE}_{debian_version(version)}_amd64.deb"
    cmd = ["dpkg-deb", "--root-owner-group", f"-Z{compression}"]
    if level is not None:
        cmd.append(f"-z{level}")
    subprocess.run([*cmd, "--build", str(root), str(deb)], check=True, stdout=subprocess.DEVNULL)
    return deb


def scan(bundle: Path) -> dict[str, set[str]]:
    """System libraries the bundle's ELF files need, by Debian package (ldd + dpkg -S)."""
    inside = {p.name for p in bundle.rglob("*.so*")}
    system: set[str] = set()
    for p in bundle.rglob("*"):
        if not p.is_file() or p.suffix not in (".so", "") and ".so." not in p.name:
            continue
        if p.read_bytes()[:4] != b"\x7fELF":
            continue
        out = subprocess.run(["ldd", str(p)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m and m.group(1) not in inside:
                system.add(os.path.realpath(m.group(2)))
    packages: dict[str, set[str]] = {}
    for lib in sorted(system):
        pkg = "?"
        # merged /usr: dpkg may know /lib/... for what resolves to /usr/lib/...
        for cand in (lib, lib.replace("/usr/lib/", "/lib/", 1)):
            res = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
            if res.returncode == 0:
                pkg = res.stdout.split(":")[0]
                break
        packages.setdefault(pkg, set()).add(Path(lib).name)
    return packages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "dist" / "AirwayStudio")
    p.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the .deb (default dist/)")
    p.add_argument("--version", help="package version (default: core.__version__)")
    p.add_argument("--work", type=Path, help="staging folder (default OUT/deb-root; removed afterwards)")
    # zstd (dpkg >= 1.21.18 and Ubuntu's since 21.10 read it): fast; xz had packed 100 MB of 1.4 GB after
    # 12 minutes on the shared 2-core VM
    p.add_argument("--compression", default="zstd", choices=("zstd", "xz", "gzip", "none"))
    p.add_argument("--level", type=int, default=None, help="compression level (dpkg-deb -z)")
    p.add_argument("--scan", action="store_true", help="print the system libraries the bundle needs, by package")
    args = p.parse_args(argv)
    if args.scan:
        for pkg, libs in sorted(scan(args.bundle).items()):
            print(f"{pkg}: {' '.join(sorted(libs))}")
        return 0
    version = args.version
    if version is None:
        sys.path.insert(0, str(ROOT))
        import core

        version = core.__version__
    work = args.work or args.out / "deb-root"
    stage(args.bundle, work, version)
    deb = build(work, args.out, version, args.compression, args.level)
    shutil.rmtree(work)
    print(f"built {deb} ({deb.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
