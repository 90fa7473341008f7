#!/usr/bin/env bash
# Create the project's virtual environment and install everything it needs (idempotent).
# Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first, pinned: this exact version resolves to the CPU wheel on this machine's index; any looser
# requirement would pull a multi-GB CUDA build. The project itself asks for a range 2.13.0 satisfies.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[ros-wheels,dev]"
touch "$VENV/.installed"
echo "environment ready: $VENV"
