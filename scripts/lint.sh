#!/usr/bin/env bash
# Lint, format check and type check (what CI runs before the tests). Config in pyproject.toml.
#   bash scripts/lint.sh          # check
#   bash scripts/lint.sh --fix    # apply ruff's fixes and formatting first
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ "${1:-}" = "--fix" ]; then
  .venv/bin/ruff check --fix .
  .venv/bin/ruff format .
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
