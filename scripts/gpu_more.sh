#!/usr/bin/env bash
# GPU rows that ../shared/gpu/run.sh (the team's kit) does not measure: a vision transformer
# (vit_b_16, random weights, exported on the GPU machine) through the engine and end to end,
# and motion-following smoothing's cost on the GPU.
# Usage, from the project root after `make build`, `cargo bench --no-run --bench engine` and
# `bash ../shared/gpu/pack.sh`:
#   bash scripts/gpu_more.sh pack       adds this script, the exporter and torchvision to .gpu/
#   then, on the GPU machine:           bash .gpu/more.sh [vit|smooth]   (default: both)
set -u
if [ "${1:-}" = pack ]; then
  set -e
  SP=$(ls -d .venv/lib/python3*/site-packages)
  cp scripts/export_model.py .gpu/
  cp "$0" .gpu/more.sh
  # The GPU machine has torch but perhaps not torchvision (the ViT's definition).
  tar cJf .gpu/torchvision.tar.xz -C "$SP" torchvision torchvision.libs
  du -sh .gpu
  exit 0
fi
G=$(cd "$(dirname "$0")" && pwd)
step() { echo; echo "=== $* ($(date +%T))"; }
[ -d "$G/lib" ] || (cd "$G" && tar xJf libs.tar.xz)
TL=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$TL:$G/lib GST_PLUGIN_SYSTEM_PATH_1_0=$G/gst GST_PLUGIN_PATH_1_0= \
       GST_REGISTRY_FORK=no GST_REGISTRY_1_0=/tmp/gstreg.bin PYTHONUNBUFFERED=1
if ! python3 -c 'import torchvision' 2>/dev/null; then
  mkdir -p "$G/tv" && tar xJf "$G/torchvision.tar.xz" -C "$G/tv" && export PYTHONPATH=$G/tv
fi
ONLY=${1:-}
B=$G/bin/gradcam-stream; V=/tmp/vit_b_16.pt; M=$G/models/efficientnet_lite0.pt; S=$G/samples
nvidia-smi -L 2>&1 | head -1
if [ "$ONLY" != smooth ]; then
step "export vit_b_16 (random weights)"
timeout 120 python3 "$G/export_model.py" --arch vit_b_16 --weights random --out $V 2>&1 | tail -1
step "engine, vit_b_16: forward-only vs Grad-CAM (frames/s)"
for cfg in "8 640 272" "32 640 272" "32 1280 720"; do set -- $cfg
  for p in fp32 fp16; do
    timeout 90 $G/bin/engine --model $V --device cuda --precision $p --batch-size $1 --width $2 --height $3 \
      --seconds 2 --rounds 2 2>&1 | grep '^{'
  done; done
step "end to end, vit_b_16 on bikes.mp4"
for b in 8 32; do for p in fp32 fp16; do
  timeout 120 $B --model $V --device cuda --precision $p --batch-size $b --input $S/bikes.mp4 --output /tmp/v.mp4 \
    --progress none 2>&1 | grep 'done:' | sed "s/^/batch $b $p: /"
done; done
fi
if [ "$ONLY" != vit ]; then
step "smoothing on the GPU: EfficientNet-Lite0, --smooth 0 vs 0.5 (frames/s)"
for cfg in "8 640 272" "32 1280 720"; do set -- $cfg
  for sm in 0 0.5; do
    timeout 90 $G/bin/engine --model $M --device cuda --batch-size $1 --width $2 --height $3 --smooth $sm \
      --seconds 2 --rounds 2 2>&1 | grep '"gradcam"' | sed "s/^/smooth $sm: /"
  done; done
fi
step done
