#!/usr/bin/env python3
"""`make bench`: each measurement, best of 3 runs on this machine, then the table and the ratios.

1. forward-only throughput of the model file (preprocess + features + head, no autograd): the limit
2. the Grad-CAM engine alone on the same batches
3. gradcam-stream end to end on samples/bikes.mp4 and samples/bigbuckbunny.mp4 (from the first
   frame, as the program reports it; the whole process, model loading included, in brackets)
4. the peer: scripts/peer_gradcam.py (OpenCV + PyPI grad-cam + show_cam_on_image + OpenCV writer)
5. the ratios, against the targets in README.md
Run from the Makefile, which sets LIBTORCH for cargo.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/gradcam-stream"
PY = ROOT / ".venv/bin/python"
BATCH = int(os.environ.get("BENCH_BATCH", "8"))
SECONDS = os.environ.get("BENCH_SECONDS", "4")
# Each figure is the best of ROUNDS runs: on a shared machine that is the least disturbed one.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CLIPS = [("bikes.mp4", 640, 272), ("bigbuckbunny.mp4", 1280, 720)]


def json_lines(out):
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def engine(w, h):
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--bench", "engine", "--", "--batch-size", str(BATCH),
         "--width", str(w), "--height", str(h), "--seconds", SECONDS, "--rounds", str(ROUNDS)],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return {r["bench"]: r for r in json_lines(out)}


def best(run):
    return max((run() for _ in range(ROUNDS)), key=lambda r: r["fps"])


def ours(clip, tmp):
    start = time.time()
    r = subprocess.run([str(BIN), "--input", str(ROOT / "samples" / clip), "--output", str(Path(tmp) / f"ours-{clip}"),
                        "--batch-size", str(BATCH), "--progress", "none"], capture_output=True, text=True)
    secs = time.time() - start
    if r.returncode != 0:
        sys.exit(f"gradcam-stream failed on {clip}: {r.stderr}")
    # "done: N frames in S s (F fps) on DEVICE ...": timed from the first frame, like the peer.
    done = r.stderr.split("done: ")[1].split()
    frames, fps = int(done[0]), float(done[5].lstrip("("))
    return {"frames": frames, "wall": secs, "fps": fps, "device": r.stderr.split(" on ")[1].split()[0]}


def peer(clip, tmp):
    out = subprocess.run([str(PY), str(ROOT / "scripts/peer_gradcam.py"), "--input", str(ROOT / "samples" / clip),
                          "--output", str(Path(tmp) / f"peer-{clip}"), "--batch-size", str(BATCH)],
                         check=True, capture_output=True, text=True).stdout
    return json_lines(out)[0]


def main():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; batch size {BATCH}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip, w, h in CLIPS:
            print(f"measuring {clip} ...", file=sys.stderr, flush=True)
            e = engine(w, h)
            o = best(lambda: ours(clip, tmp))
            p = best(lambda: peer(clip, tmp))
            rows.append((clip, w, h, e["forward"]["fps"], e["gradcam"]["fps"], o["fps"], p["fps"], e["forward"]["device"],
                         o["frames"] / o["wall"]))
    print()
    print("| clip | model forward-only (limit) | Grad-CAM engine | gradcam-stream end to end (whole process) "
          "| peer (Python) | engine / forward | e2e / peer | e2e / forward |")
    print("|---|---|---|---|---|---|---|---|")
    for clip, w, h, fwd, gc, e2e, pr, dev, whole in rows:
        print(f"| {clip} ({w}x{h}, {dev}) | {fwd:.1f} fps | {gc:.1f} fps | {e2e:.1f} fps ({whole:.1f}) | {pr:.1f} fps "
              f"| {gc / fwd:.2f}x | {e2e / pr:.2f}x | {e2e / fwd:.2f}x |")
    print()
    print("targets: engine / forward >= 0.9, e2e / peer >= 1.5 (stretch 2), e2e / forward >= 0.85")


if __name__ == "__main__":
    main()
