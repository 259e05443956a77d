#!/usr/bin/env bash
# GPU rows that ../shared/gpu/run.sh (the team's kit) does not measure: a vision transformer
# (vit_b_16, random weights, exported on the GPU machine) through the engine and end to end,
# motion-following smoothing's cost on the GPU, the whole frames copied per frame with and
# without a shown output, and the detector (CenterFace on real faces: forward-only against
# every box explained, one and five faces a frame, fp32 and fp16).
# Usage, from the project root after `make build`, `cargo bench --no-run --bench engine` and
# `bash ../shared/gpu/pack.sh`:
#   bash scripts/gpu_more.sh pack       adds this script, the exporter and torchvision to .gpu/
#   then, on the GPU machine:           bash .gpu/more.sh [vit|smooth|copies|density|detector]   (default: all)
# density: the camera farm (examples/rtsp_serve) on the machine's own cores serving N 1080p30
# H.264 cameras, one gradcam-stream (--output null --metadata for all, a recording for 4), the
# largest N with 0 drops and p95 <= 150 ms for 60 s (scripts/density.py; 20 s probes from 16).
set -u
if [ "${1:-}" = pack ]; then
  set -e
  SP=$(ls -d .venv/lib/python3*/site-packages)
  cp scripts/export_model.py scripts/density.py scripts/soak.py .gpu/
  cp target/release/examples/rtsp_serve .gpu/bin/
  # The cameras' stream, made here (the GPU machine has no ffmpeg): 1080p30 H.264 as cameras
  # send it (no B-frames, a key frame a second).
  ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 20 -c:v libx264 -preset veryfast \
    -tune zerolatency -g 30 -pix_fmt yuv420p .gpu/samples/camera-1080p30.mp4
  cp "$0" .gpu/more.sh
  # The detector and its face frames (raw RGBx 640x384, made here with ffmpeg).
  cp models/centerface.pt models/centerface.json .gpu/models/
  ffmpeg -v error -y -i samples/carphone_pristine.mp4 -vf scale=640:384,format=rgba -frames:v 32 \
    -f rawvideo .gpu/samples/faces1.rgbx
  ffmpeg -v error -y -i samples/carphone_pristine.mp4 -filter_complex \
    "[0:v]split=5[a][b][c][d][e];[a][b][c][d][e]xstack=inputs=5:layout=0_0|w0_0|w0+w1_0|0_h0|w0_h0:fill=gray,scale=640:384,format=rgba" \
    -frames:v 32 -f rawvideo .gpu/samples/faces5.rgbx
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
if [ -z "$ONLY" ] || [ "$ONLY" = vit ]; then
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
if [ -z "$ONLY" ] || [ "$ONLY" = smooth ]; then
step "smoothing on the GPU: EfficientNet-Lite0, --smooth 0 vs 0.5 (frames/s)"
for cfg in "8 640 272" "32 1280 720"; do set -- $cfg
  for sm in 0 0.5; do
    timeout 90 $G/bin/engine --model $M --device cuda --batch-size $1 --width $2 --height $3 --smooth $sm \
      --seconds 2 --rounds 2 2>&1 | grep '"gradcam"' | sed "s/^/smooth $sm: /"
  done; done
fi
if [ -z "$ONLY" ] || [ "$ONLY" = copies ]; then
step "host copies per frame: 1080p to mp4 (shown) vs --output null --metadata (results only)"
for out in /tmp/c.mp4 null; do
  timeout 120 $B --model $M --device cuda --batch-size 32 --input "test://ball?size=1920x1080&fps=1000" \
    --on-overload block --max-frames 600 --output $out --metadata /tmp/c.jsonl --stats 60 --progress none 2>&1 \
    | grep -E 'done:|stats: total' | sed "s|^|$out: |"
done
fi
if [ -z "$ONLY" ] || [ "$ONLY" = density ]; then
step "density: farm cameras at 1920x1080 30 fps into one gradcam-stream on the GPU"
DENSITY_BIN=$B DENSITY_SERVE=$G/bin/rtsp_serve DENSITY_MODEL=$M DENSITY_CLIP=$S/camera-1080p30.mp4 \
  DENSITY_KINDS=1920x1080@30 DENSITY_P95=150 DENSITY_START=16 DENSITY_PROBE=20 DENSITY_SECONDS=60 \
  DENSITY_WARMUP=10 DENSITY_RECORD=4 DENSITY_ARGS="--device cuda --batch-size 32 --metadata /tmp/density-{stream}.jsonl" \
  timeout 420 python3 "$G/density.py"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = detector ]; then
step "detector: CenterFace on real faces, 640x384 input, forward-only vs every box explained (frames/s)"
for f in faces1 faces5; do for b in 8 32; do for p in fp32 fp16; do
  timeout 90 $G/bin/engine --model $G/models/centerface.pt --device cuda --precision $p --batch-size $b \
    --frames $S/$f.rgbx --width 640 --height 384 --detector-size 640x384 --boxes 5 --seconds 2 --rounds 2 2>&1 \
    | grep '^{' | sed "s/^/$f: /"
done; done; done
fi
step done
