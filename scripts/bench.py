#!/usr/bin/env python3
"""`make bench`: each measurement, best of 3 runs on this machine, then the table and the ratios.

1. forward-only throughput of the model file (preprocess + features + head, no autograd): the limit
2. the Grad-CAM engine alone on the same batches
3. gradcam-stream end to end on samples/bikes.mp4 and samples/bigbuckbunny.mp4 (from the first
   frame, as the program reports it; the whole process, model loading included, in brackets)
4. the peer: scripts/peer_gradcam.py (OpenCV + PyPI grad-cam + show_cam_on_image + OpenCV writer)
5. the ratios, against the targets in README.md
6. live: a 25 fps live source (test://, 640x480) explained to a file for BENCH_LIVE_SECONDS (60):
   latency p50/p95 from appsink to appsrc and the share of frames dropped
7. RTSP to RTSP: examples/rtsp_serve serves a 60 fps 640x480 live pattern, gradcam-stream reads it
   and serves its output, ffmpeg watches that: frames explained per second end to end
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
LIVE_SECONDS = os.environ.get("BENCH_LIVE_SECONDS", "60")
RTSP_SECONDS = os.environ.get("BENCH_RTSP_SECONDS", "30")


def json_lines(out):
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def engine(w, h, *extra):
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--bench", "engine", "--", "--batch-size", str(BATCH),
         "--width", str(w), "--height", str(h), "--seconds", SECONDS, "--rounds", str(ROUNDS), *extra],
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


def total_stats(stderr):
    """The `stats: total ...` line as a dict."""
    line = next(l for l in stderr.splitlines() if l.startswith("stats: total"))
    return dict(kv.split("=", 1) for kv in line.split()[2:])


def live(tmp):
    r = subprocess.run([str(BIN), "--input", "test://ball?size=640x480&fps=25", "--output", str(Path(tmp) / "live.mp4"),
                        "--duration", LIVE_SECONDS, "--stats", LIVE_SECONDS, "--progress", "none"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"live run failed: {r.stderr}")
    t = total_stats(r.stderr)
    return {"p50": t["latency_p50"], "p95": t["latency_p95"], "in": int(t["in"]), "dropped": int(t["dropped"]),
            "fps": float(t["fps"])}


def rtsp_to_rtsp():
    server = subprocess.Popen([str(ROOT / "target/release/examples/rtsp_serve"), "0", "/live", "test:ball:640x480:60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split("serving: ")[1].strip()
        ours = subprocess.Popen([str(BIN), "--input", url, "--output", "rtsp://127.0.0.1:0/out", "--duration", RTSP_SECONDS,
                                 "--stats", RTSP_SECONDS, "--progress", "none"], stderr=subprocess.PIPE, text=True)
        line = ours.stderr.readline()
        served = line.split("serving: ")[1].strip()
        viewer = subprocess.Popen(["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", served, "-f", "null", "-"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        err = ours.communicate()[1]
        viewer.kill()
        if ours.returncode != 0:
            sys.exit(f"RTSP run failed: {err}")
        t = total_stats(err)
        return {"fps": float(t["fps"]), "in": int(t["in"]), "dropped": int(t["dropped"]), "p95": t["latency_p95"]}
    finally:
        server.kill()


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
    print("measuring every CAM method on bikes.mp4-sized batches ...", file=sys.stderr, flush=True)
    m = engine(640, 272, "--methods")
    print()
    print("| method (640x272 frames) | frames / s | cost vs forward-only |")
    print("|---|---|---|")
    for name, r in m.items():
        if name != "forward":
            print(f"| {name} | {r['fps']:.1f} | {r['fps'] / m['forward']['fps']:.2f}x |")
    print(f"| (forward-only) | {m['forward']['fps']:.1f} | 1.00x |")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"measuring a 25 fps live source for {LIVE_SECONDS} s ...", file=sys.stderr, flush=True)
        lv = live(tmp)
    print(f"measuring RTSP to RTSP for {RTSP_SECONDS} s ...", file=sys.stderr, flush=True)
    rt = rtsp_to_rtsp()
    print()
    print("| live run | frames explained / s | latency p50 | latency p95 | dropped |")
    print("|---|---|---|---|---|")
    print(f"| test:// 640x480 at 25 fps → mp4, {LIVE_SECONDS} s | {lv['fps']:.1f} | {lv['p50']} | {lv['p95']} "
          f"| {lv['dropped']} of {lv['in']} ({100 * lv['dropped'] / max(lv['in'], 1):.1f}%) |")
    print(f"| RTSP 640x480 at 60 fps → RTSP (ffmpeg watching), {RTSP_SECONDS} s | {rt['fps']:.1f} | - | {rt['p95']} "
          f"| {rt['dropped']} of {rt['in']} ({100 * rt['dropped'] / max(rt['in'], 1):.1f}%) |")


if __name__ == "__main__":
    main()
