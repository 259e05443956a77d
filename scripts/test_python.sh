#!/usr/bin/env bash
# The Python package's tests, on the wheel `make wheel` wrote, installed into a fresh
# virtualenv (scripts/py_venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/py_venv.sh)
"$py" -m pytest -q -rs crates/gradcam-py/tests "$@"
