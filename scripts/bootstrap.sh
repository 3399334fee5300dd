#!/usr/bin/env bash
# Set up Airway Studio on a fresh Debian 12 / Ubuntu 22.04+ machine: system
# libraries for Qt and VTK, a virtual environment in .venv, torch (pinned, CPU
# build unless AIRWAY_TORCH=cuda), then the project and its test extras.
# Idempotent: a rerun with nothing changed takes a second or two.
#
#   bash scripts/bootstrap.sh            # app + tests
#   AIRWAY_TORCH=cuda bash scripts/bootstrap.sh   # CUDA build of torch instead
set -euo pipefail

cd "$(dirname "$0")/.."
TORCH_VERSION="2.13.0"
VARIANT="${AIRWAY_TORCH:-cpu}"
PYTHON="${PYTHON:-python3}"
VENV=".venv"

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# -- system libraries (Qt xcb under X/Xvfb, OpenGL for VTK) ---------------------
APT_PACKAGES=(xvfb xauth libegl1 libgl1 libgl1-mesa-dri libfontconfig1 libglib2.0-0 libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0
  libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-xkb1 libx11-xcb1)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
    say "missing system packages: ${missing[*]}"
    say "install them as root: apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- Python ----------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  say "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11."
  exit 1
fi
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

stamp="$VENV/.airway-setup"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16) torch=$TORCH_VERSION/$VARIANT"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import torch, PySide6, core" 2>/dev/null; then
  exit 0
fi

# torch first, pinned: an unpinned torch (or one pulled in by another package)
# is a multi-GB CUDA build on Linux.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  say "installing torch $TORCH_VERSION ($VARIANT)"
  if [ "$VARIANT" = "cuda" ]; then
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
  elif ! "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
    # PyPI has no +cpu builds: take the CPU build from PyTorch's own index
    "${PIP[@]}" install -q "torch==$TORCH_VERSION+cpu" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
fi
constraint="$VENV/torch-constraint.txt"
echo "torch==$TORCH_VERSION" > "$constraint"
say "installing Airway Studio and its dependencies"
"${PIP[@]}" install -q -c "$constraint" -e ".[test,fast-cpu]"
echo "$want" > "$stamp"
say "ready: $VENV/bin/airway-studio (GUI), $VENV/bin/airway (command line)"
