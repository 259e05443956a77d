#!/usr/bin/env bash
# The Python package's tests, as a user gets it: the wheel `make wheel` wrote, installed into a
# fresh virtualenv. That virtualenv sees the project's torch (a .pth line naming the project's
# site-packages) rather than installing a second multi-gigabyte copy.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-venv
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$venv"
python3 -m venv "$venv"
fresh=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$fresh/project.pth"
wheel=$(ls -t target/wheels/gradcam_stream-*.whl | head -1)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$wheel"
"$venv/bin/python" -m pytest -q crates/gradcam-py/tests "$@"
