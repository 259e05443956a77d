#!/usr/bin/env bash
# A fresh virtualenv at target/py-venv with the wheel `make wheel` wrote, as a user gets the
# package; it sees the project's torch (a .pth line naming the project's site-packages) rather
# than installing a second multi-gigabyte copy. Prints the virtualenv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-venv
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$venv"
python3 -m venv "$venv"
fresh=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$fresh/project.pth"
wheel=$(ls -t target/wheels/gradcam_stream-*.whl | head -1)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$wheel" >&2
echo "$PWD/$venv/bin/python"
