"""Write THIRD_PARTY_NOTICES: name, version, licence and licence text of every shipped distribution.

    python installer/make_notices.py --out build/THIRD_PARTY_NOTICES.txt

Which distributions: by default the closure of the project's runtime requirements
(``pyproject.toml`` dependencies plus the ``fast-cpu`` engines the bundle keeps),
walked through the installed distributions' own ``Requires-Dist`` with markers
evaluated for this interpreter. The PyInstaller spec passes the top-level
modules it actually collected instead (:func:`distributions_for_modules`), so the
file lists what the bundle holds. Everything is read with :mod:`importlib.metadata`.

Licence texts are the files each distribution ships (PEP 639 ``License-File``
entries, else LICENSE/COPYING/NOTICE files in its RECORD). A few wheels ship none
(PySide6, shiboken6, edt, flatbuffers): for those the standard text of the licence they
declare is taken from ``installer/licence_texts/`` (copies of Debian's
/usr/share/common-licenses).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEXTS = HERE / "licence_texts"
#: optional engines the bundle ships (core.segmentation.backends: ONNX Runtime is the CPU default, onnx exports to it)
BUNDLED_EXTRAS = ("onnxruntime", "onnx")
#: the frozen program also contains the PyInstaller bootloader (GPL-2.0-or-later with the bootloader exception)
BUILD_TOOLS = ("pyinstaller",)
_LICENCE_NAME = re.compile(r"^(licen[cs]e|copying|notice|authors|third[-_]?party[-_]?notices)", re.I)
_TEXT_SUFFIXES = {"", ".txt", ".md", ".rst"}
# classifier "License :: OSI Approved :: X" -> SPDX id, for the wheels with neither License-Expression nor a short License
_CLASSIFIERS = {
    "BSD License": "BSD",
    "MIT License": "MIT",
    "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0",
    "ISC License (ISCL)": "ISC",
    "The Unlicense (Unlicense)": "Unlicense",
    "zlib/libpng License": "Zlib",
}
# declared licence -> standard texts to add when the distribution ships none
_FALLBACK_TEXTS = (
    ("LGPL-3.0", ("LGPL-3.0.txt", "GPL-3.0.txt")),
    ("GPL-3.0", ("GPL-3.0.txt",)),
    ("APACHE", ("Apache-2.0.txt",)),
)


@dataclass
class Notice:
    name: str
    version: str
    licence: str
    texts: list[tuple[str, str]] = field(default_factory=list)  # (file name, text)


def project_requirements(
    pyproject: Path = ROOT / "pyproject.toml", extras: tuple[str, ...] = BUNDLED_EXTRAS
) -> list[str]:
    """The project's runtime requirement names plus ``extras`` (distribution names)."""
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [Requirement(d).name for d in deps] + list(extras)


def requirement_closure(roots: list[str]) -> list[metadata.Distribution]:
    """Installed distributions reachable from ``roots`` through Requires-Dist (no extras, markers evaluated)."""
    env: dict[str, str] = {**{k: str(v) for k, v in default_environment().items()}, "extra": ""}
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here is not shipped either
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def distributions_for_modules(top_levels: set[str]) -> list[metadata.Distribution]:
    """Installed distributions that provide any of the top-level module names."""
    owners = metadata.packages_distributions()  # one scan of every RECORD: slow, so once
    names = {d for m in top_levels for d in owners.get(m, [])}
    dists = {}
    for n in names:
        try:
            dist = metadata.distribution(n)
        except metadata.PackageNotFoundError:
            continue
        dists[canonicalize_name(dist.metadata["Name"])] = dist
    return [dists[k] for k in sorted(dists)]


def _field(dist: metadata.Distribution, name: str) -> str:
    """One metadata field, "" when absent (PackageMetadata declares no .get)."""
    return str((dist.metadata.get_all(name) or [""])[0] or "")


def licence_of(dist: metadata.Distribution) -> str:
    md = dist.metadata
    expr = _field(dist, "License-Expression").strip()
    if expr:
        return expr
    lic = _field(dist, "License").strip()
    if lic and "\n" not in lic and len(lic) <= 120 and lic.upper() not in ("UNKNOWN", "LICENSE", "LICENSE.TXT"):
        return lic
    found = [
        _CLASSIFIERS.get(c.split(" :: ")[-1], c.split(" :: ")[-1])
        for c in md.get_all("Classifier") or []
        if c.startswith("License :: ")
    ]
    return " AND ".join(found) if found else "not declared (see the text below)"


def _licence_files(dist: metadata.Distribution) -> list[metadata.PackagePath]:
    listed = md_files = dist.metadata.get_all("License-File") or []
    files = list(dist.files or [])
    if listed:
        # PEP 639: .dist-info/licenses/<path>; older setuptools put them at the .dist-info root
        md_files = [
            f
            for f in files
            if ".dist-info/" in str(f).replace("\\", "/")
            and any(str(f).replace("\\", "/").endswith("/" + name) for name in listed)
        ]
    if not listed or not md_files:
        md_files = [f for f in files if _LICENCE_NAME.match(f.name) and Path(f.name).suffix.lower() in _TEXT_SUFFIXES]
    return sorted(set(md_files), key=lambda f: (str(f).count("/"), str(f)))


def notice_for(dist: metadata.Distribution) -> Notice:
    md = dist.metadata
    notice = Notice(md["Name"], dist.version, licence_of(dist))
    for f in _licence_files(dist):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text and text.strip():
            rel = str(f).replace("\\", "/").split(".dist-info/", 1)[-1].removeprefix("licenses/")
            notice.texts.append((rel, text.strip()))
    if not notice.texts:
        lic = _field(dist, "License")
        if len(lic) > 200:  # some wheels carry the whole text in the License field
            notice.texts.append(("License (metadata)", lic.strip()))
        else:
            for spdx, texts in _FALLBACK_TEXTS:
                if spdx in notice.licence.upper():
                    notice.texts += [
                        (
                            f"{t} (standard text of the declared licence)",
                            (TEXTS / t).read_text(encoding="utf-8").strip(),
                        )
                        for t in texts
                    ]
                    break
    return notice


def python_notice() -> Notice:
    """The interpreter the bundle embeds; its LICENSE.txt where this install keeps one."""
    version = ".".join(map(str, sys.version_info[:3]))
    notice = Notice("Python", version, "PSF-2.0")
    base = Path(sys.base_prefix)
    for cand in (
        base / "LICENSE.txt",
        base / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "LICENSE.txt",
    ):
        if cand.is_file():
            notice.texts.append(("LICENSE.txt", cand.read_text(encoding="utf-8", errors="replace").strip()))
            break
    if not notice.texts:
        notice.texts.append(
            ("LICENSE", "Python Software Foundation License Version 2: https://docs.python.org/3/license.html")
        )
    return notice


def render(notices: list[Notice], title: str = "Airway Studio") -> str:
    width = max([len(n.name) for n in notices] + [9])
    vwidth = max([len(n.version) for n in notices] + [7])
    out = [
        f"THIRD-PARTY NOTICES for {title}",
        "",
        f"{title} is MIT licensed. It ships the following third-party components, each under its own",
        "licence, reproduced below. The LGPL components (Qt/PySide6, shiboken6, connected-components-3d,",
        "edt) are dynamically linked libraries in the installation folder and may be replaced by the user.",
        "",
        f"{'Component':<{width}}  {'Version':<{vwidth}}  Licence",
        f"{'-' * width}  {'-' * vwidth}  -------",
    ]
    out += [f"{n.name:<{width}}  {n.version:<{vwidth}}  {n.licence}" for n in notices]
    for n in notices:
        out += ["", "=" * 78, f"{n.name} {n.version}", f"Licence: {n.licence}", "=" * 78]
        if not n.texts:
            out += ["", "(the distribution ships no licence text)"]
        for name, text in n.texts:
            out += ["", f"--- {name} ---", "", text]
    return "\n".join(out) + "\n"


def build_notices(dists: list[metadata.Distribution], with_python: bool = True) -> list[Notice]:
    own = canonicalize_name("airway-studio")
    notices = [notice_for(d) for d in dists if canonicalize_name(d.metadata["Name"]) != own]
    if with_python:
        notices.append(python_notice())
    return sorted(notices, key=lambda n: n.name.lower())


def write_notices(out: Path, dists: list[metadata.Distribution] | None = None) -> Path:
    if dists is None:
        dists = requirement_closure(project_requirements() + list(BUILD_TOOLS))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(build_notices(dists)), encoding="utf-8", newline="\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="file to write")
    args = p.parse_args(argv)
    path = write_notices(args.out)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
