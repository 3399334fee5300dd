#!/usr/bin/env bash
# Build the Linux bundle: dist/AirwayStudio/ (one folder) and a tar.gz with a
# .desktop launcher. The bundle still needs the system GL/X/xcb libraries that
# scripts/bootstrap.sh lists (they are part of every desktop Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m pip install -q -c .venv/torch-constraint.txt "pyinstaller>=6.5"
.venv/bin/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller installer/airway_studio.spec
install -m 0644 installer/linux/airway-studio.desktop dist/AirwayStudio/
install -m 0755 installer/linux/install.sh dist/AirwayStudio/
version=$(.venv/bin/python -c "import core; print(core.__version__)")
tar -C dist -czf "dist/AirwayStudio-$version-linux-x86_64.tar.gz" AirwayStudio
# a smoke test of the frozen build: the subcommands are there (they are found with
# pkgutil, which a bad spec silently empties), a phantom segments with the bundled
# model, and the GUI starts, renders and exits (needs xvfb-run on a headless machine)
app=dist/AirwayStudio/AirwayStudio
"$app" --version
"$app" train --help >/dev/null
smoke=$(mktemp -d)
"$app" phantom --size 48 --out "$smoke" >/dev/null
"$app" segment -q --input "$smoke/ct.nii.gz" --output "$smoke/seg.nii.gz"
if command -v xvfb-run >/dev/null; then
  xvfb-run -a -s "-screen 0 1600x1000x24" "$app" --demo --screenshot "$smoke/gui.png"
fi
rm -rf "$smoke"
echo "built dist/AirwayStudio-$version-linux-x86_64.tar.gz"
