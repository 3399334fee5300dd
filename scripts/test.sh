#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite headless. Tests that show
# windows run on a virtual X server (pytest-xvfb starts Xvfb; Qt uses xcb, which
# pyvistaqt's 3D widget needs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
unset QT_QPA_PLATFORM
exec .venv/bin/python -m pytest -q --timeout=900 "$@"
