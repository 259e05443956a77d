#!/usr/bin/env python3
"""`make soak-density` and `make soak-behind`: benchmarks with a camera farm (examples/rtsp_serve
serving one pre-encoded H.264 clip as N looping cameras, never re-encoded) and one
gradcam-stream explaining all of them (`--output null`, `/metrics` read for the figures).

density (the default): for each camera kind (320x180 and 640x360, at 10 and 25 fps), the largest
number of cameras one process explains with 0 drops and p95 latency <= 250 ms for
DENSITY_SECONDS (300) after a warm-up of DENSITY_WARMUP (15) seconds. The search doubles the
count with short trials (DENSITY_PROBE, 30 s) until one fails, bisects between the last pass
and the first fail, then confirms the best count with a full-length trial (stepping down until
one holds). Prints one line a trial and the table for docs/performance.md. DENSITY_KINDS (for example
`640x360@10,320x180@25`) picks the kinds.

--behind: BEHIND_STREAMS (16) 640x360 25 fps cameras, more than the machine explains, for
BEHIND_SECONDS (60) with `--max-latency-ms 300`, once with `--when-behind key-frames` (the
default: a stream dropping most of its frames decodes its key frames only) and once with
`--when-behind all`: the process's CPU time, frames explained, dropped and left undecoded, and
p95, so the saving shows.

On the GPU machine (scripts/gpu_more.sh density): DENSITY_BIN and DENSITY_SERVE name the
binaries, DENSITY_CLIP a pre-made clip (one kind, named by DENSITY_KINDS), DENSITY_P95 the
latency target in ms (250), DENSITY_START the first count tried (1), DENSITY_ARGS more flags
(`--device cuda --metadata …`) and DENSITY_RECORD how many cameras are also recorded to MP4 (0).

A benchmark, not a test: nothing here is asserted; the exit status is 0 unless a run crashed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soak
from soak import ROOT, Camera, cpu_seconds, free_port, make_clip, p95, scrape

MODEL = os.environ.get("DENSITY_MODEL", str(ROOT / "models/efficientnet_lite0.pt"))
BIN = os.environ.get("DENSITY_BIN", str(soak.BIN))
soak.SERVE = os.environ.get("DENSITY_SERVE", str(soak.SERVE))
TARGET_MS = float(os.environ.get("DENSITY_P95", "250"))
RECORD = int(os.environ.get("DENSITY_RECORD", "0"))


def merged(m, names):
    """`m` with the streams' latency histograms added up as stream `*`."""
    out = dict(m)
    for (metric, stream, le), v in m.items():
        if metric == "gradcam_stream_latency_seconds_bucket" and stream in names:
            key = (metric, "*", le)
            out[key] = out.get(key, 0) + v
    return out


def total(m, metric, names):
    return sum(m.get((metric, n, ""), 0) for n in names)


def trial(clip, n, seconds, warmup, extra=()):
    """`n` farm cameras of `clip` into one gradcam-stream: after `warmup` s, `seconds` s of
    figures (frames in, out, dropped, undecoded; p95 over all streams; CPU seconds)."""
    farm = Camera(free_port(), clip, n)
    farm.start()
    cmd = [BIN, "--model", MODEL, "--metrics", "127.0.0.1:0", "--rtsp-transport", "tcp", "--progress", "none",
           *os.environ.get("DENSITY_ARGS", "").split(), *extra]
    # One [[stream]] table a camera: every camera to null, the first RECORD ones also recorded.
    recordings = tempfile.TemporaryDirectory()
    site = Path(recordings.name) / "site.toml"
    tables = []
    for i in range(n):
        outputs = ["null"] + ([f"{recordings.name}/cam{i}.mp4"] if i < RECORD else [])
        url = farm.url(i) if n > 1 else farm.url()
        # JSON strings and arrays are TOML ones too.
        tables.append(f'[[stream]]\nname = "cam{i}"\ninput = {json.dumps(url)}\noutput = {json.dumps(outputs)}\n')
    site.write_text("\n".join(tables))
    cmd += ["--config", str(site)]
    run = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    log, base = [], None
    try:
        while base is None:
            line = run.stderr.readline()
            if not line:
                raise RuntimeError("gradcam-stream ended before serving metrics:\n" + "".join(log[-20:]))
            log.append(line)
            if line.startswith("metrics: "):
                base = line.split()[1].rsplit("/metrics", 1)[0]
        threading.Thread(target=lambda: log.extend(run.stderr), daemon=True).start()
        names = [f"cam{i}" for i in range(n)]
        # The warm-up counts from the first frame of every camera.
        deadline = time.time() + 60
        while time.time() < deadline:
            m = scrape(base)
            if all(m.get(("gradcam_stream_frames_in_total", s, ""), 0) > 0 for s in names):
                break
            time.sleep(0.5)
        time.sleep(warmup)
        before, cpu0, t0 = scrape(base), cpu_seconds(run.pid), time.time()
        time.sleep(seconds)
        after, cpu1, t1 = scrape(base), cpu_seconds(run.pid), time.time()
        if run.poll() is not None:
            raise RuntimeError("gradcam-stream ended during the trial:\n" + "".join(log[-20:]))
    finally:
        if run.poll() is None:
            run.send_signal(2)
            try:
                run.wait(30)
            except subprocess.TimeoutExpired:
                run.kill()
        farm.kill()
        recordings.cleanup()
    d = {k: total(after, f"gradcam_stream_frames_{k}_total", names) - total(before, f"gradcam_stream_frames_{k}_total", names)
         for k in ("in", "out", "dropped", "undecoded")}
    per_stream = [after.get(("gradcam_stream_frames_out_total", s, ""), 0)
                  - before.get(("gradcam_stream_frames_out_total", s, ""), 0) for s in names]
    d.update(p95=p95(merged(before, names), merged(after, names), "*"), cpu=cpu1 - cpu0, wall=t1 - t0, per_stream=per_stream)
    return d


def holds(r):
    return r["dropped"] == 0 and r["p95"] is not None and r["p95"] <= TARGET_MS


def show(kind, n, seconds, r):
    p = "-" if r["p95"] is None else f"{r['p95']:.0f} ms"
    verdict = "holds" if holds(r) else "fails"
    print(f"  {kind}: {n} cameras, {seconds} s: in {r['in'] / r['wall']:.1f}/s, explained {r['out'] / r['wall']:.1f}/s, "
          f"dropped {r['dropped']:.0f}, p95 {p}, CPU {r['cpu'] / r['wall']:.2f} cores: {verdict}", flush=True)


def search(clip, kind, probe, seconds, warmup):
    """The largest camera count that holds for `seconds` (0 if even one camera does not)."""
    results = {}

    def at(n, s):
        r = trial(clip, n, s, warmup)
        show(kind, n, s, r)
        results[(n, s)] = r
        return holds(r)

    good, bad = 0, None
    n = int(os.environ.get("DENSITY_START", "1"))
    while bad is None:
        if at(n, probe):
            good, n = n, n * 2
        else:
            bad = n
    while bad - good > 1:
        mid = (good + bad) // 2
        if at(mid, probe):
            good = mid
        else:
            bad = mid
    while good > 0 and not at(good, seconds):
        good -= 1
    return good, results.get((good, seconds))


def density(a):
    kinds = [k.split("@") for k in os.environ.get("DENSITY_KINDS", "320x180@10,320x180@25,640x360@10,640x360@25").split(",")]
    probe = int(os.environ.get("DENSITY_PROBE", "30"))
    seconds = int(os.environ.get("DENSITY_SECONDS", "300"))
    warmup = int(os.environ.get("DENSITY_WARMUP", "15"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, fps in kinds:
            clip = os.environ.get("DENSITY_CLIP") or make_clip(tmp, size, int(fps))
            kind = f"{size} at {fps} fps"
            print(f"density: searching {kind} (probes of {probe} s, then {seconds} s) ...", flush=True)
            rows.append((kind, *search(clip, kind, probe, seconds, warmup)))
    print()
    print(f"| farm cameras, one process, {os.cpu_count()} cores | cameras held ({seconds} s, 0 drops, "
          f"p95 <= {TARGET_MS:.0f} ms) "
          "| frames explained / s | p95 | CPU (cores) |")
    print("|---|---|---|---|---|")
    for kind, n, r in rows:
        if r is None:
            print(f"| {kind} | 0 | - | - | - |")
        else:
            print(f"| {kind} | {n} | {r['out'] / r['wall']:.1f} | {r['p95']:.0f} ms | {r['cpu'] / r['wall']:.2f} |")


def behind(a):
    n = int(os.environ.get("BEHIND_STREAMS", "16"))
    seconds = int(os.environ.get("BEHIND_SECONDS", "60"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(tmp, "640x360", 25)
        for mode in ("key-frames", "all"):
            print(f"behind: {n} cameras 640x360 at 25 fps, --when-behind {mode}, {seconds} s ...", flush=True)
            r = trial(clip, n, seconds, 15, ["--max-latency-ms", "300", "--when-behind", mode])
            rows.append((mode, r))
    print()
    print(f"| {n} farm cameras 640x360 at 25 fps, --max-latency-ms 300, {seconds} s | CPU (cores) | frames decoded / s "
          "| explained / s | dropped / s | left undecoded / s | CPU ms per explained frame | p95 | explained per stream |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, r in rows:
        w = r["wall"]
        p = "-" if r["p95"] is None else f"{r['p95']:.0f} ms"
        print(f"| --when-behind {mode} | {r['cpu'] / w:.2f} | {r['in'] / w:.1f} | {r['out'] / w:.1f} | {r['dropped'] / w:.1f} "
              f"| {r['undecoded'] / w:.1f} | {1000 * r['cpu'] / max(r['out'], 1):.1f} | {p} "
              f"| {min(r['per_stream']):.0f}–{max(r['per_stream']):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--behind", action="store_true")
    a = ap.parse_args()
    try:
        behind(a) if a.behind else density(a)
    except RuntimeError as e:
        sys.exit(f"density: {e}")


if __name__ == "__main__":
    main()
