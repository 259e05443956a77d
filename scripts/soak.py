#!/usr/bin/env python3
"""`make soak`: many live RTSP cameras into one gradcam-stream for a long run, killing and
restarting two camera servers midway. A benchmark, not a test: it prints a table every
interval (RSS, each stream's p95 latency over the interval, drops) and checks the targets:

- RSS over the second half at most 5% above the first half's maximum (no leak);
- p95 latency in the last interval at most 1.2x the second interval's (no creeping backlog);
- both killed streams recover (frames flow again, `up` is 1);
- no other stream drops a frame.

The cameras are a camera farm: examples/rtsp_serve serving one pre-encoded H.264 clip
(ffmpeg's testsrc2, made once at the size and rate asked), looping, without re-encoding; the
two killed cameras each have a server of their own. The latency quantiles come
from gradcam-stream's own /metrics histogram (Prometheus-style interpolation between buckets).
SOAK_STREAMS (8), SOAK_SECONDS (600), SOAK_SIZE (640x360), SOAK_FPS (10) and SOAK_MODEL
override the defaults, and SOAK_ARGS adds flags to gradcam-stream's command line; `--ci` is the short run CI makes (exits non-zero only on a crash or a
stream that does not recover; timings are reported, not asserted).
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/gradcam-stream"
SERVE = ROOT / "target/release/examples/rtsp_serve"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Camera:
    """examples/rtsp_serve serving one pre-encoded H.264 clip, looping, as `n` cameras (a
    camera farm: parsed and payloaded, never re-encoded, so the cameras cost the cores the
    explainer needs almost nothing)."""

    def __init__(self, port, clip, n=1):
        self.port, self.clip, self.n = port, clip, n
        self.proc = None

    def start(self):
        cmd = [str(SERVE), str(self.port), "/cam", str(self.clip), "--loop"]
        if self.n > 1:
            cmd += ["--cameras", str(self.n)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("serving:"):
            sys.exit(f"soak: the camera server on port {self.port} did not start")
        # Keep reading its output (the farm's CPU line every 10 s) so it never blocks.
        import threading
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def url(self, k=0):
        return f"rtsp://127.0.0.1:{self.port}/cam" + (str(k) if self.n > 1 else "")


def make_clip(tmp, size, fps, seconds=20):
    """The cameras' stream: `seconds` of ffmpeg's testsrc2 at `size` and `fps`, H.264 with a
    key frame every second, encoded once before the run."""
    clip = Path(tmp) / f"camera-{size}-{fps}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(fps),
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    return clip


SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})?\s+(\S+)$')


def scrape(base):
    """{(metric, stream, le): value} from /metrics."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in m.group(2).split(",")) if m.group(2) else {}
        labels = {k: v.strip('"') for k, v in labels.items()}
        out[(m.group(1), labels.get("stream", ""), labels.get("le", ""))] = float(m.group(3))
    return out


def p95(before, after, stream):
    """The 95th percentile of latency between two scrapes, in ms (None without frames)."""
    name = "gradcam_stream_latency_seconds_bucket"
    buckets = sorted(((float("inf") if le == "+Inf" else float(le)), after[(n, s, le)] - before.get((n, s, le), 0))
                     for (n, s, le) in after if n == name and s == stream)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank, lo, seen = 0.95 * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lo * 1000
            frac = (rank - seen) / max(count - seen, 1e-9)
            return (lo + (le - lo) * frac) * 1000
        lo, seen = le, count
    return None


def cpu_seconds(pid):
    """The CPU time (user and system) process `pid` has used, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=int(os.environ.get("SOAK_STREAMS", "8")))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")))
    ap.add_argument("--size", default=os.environ.get("SOAK_SIZE", "640x360"))
    ap.add_argument("--fps", type=int, default=int(os.environ.get("SOAK_FPS", "10")))
    ap.add_argument("--model", default=os.environ.get("SOAK_MODEL", str(ROOT / "models/efficientnet_lite0.pt")))
    ap.add_argument("--ci", action="store_true")
    a = ap.parse_args()
    interval = 60 if a.seconds >= 360 else max(5, a.seconds // 6)
    victims = [1, a.streams // 2 + 1] if a.streams > 2 else [a.streams - 1]
    kill_at, back_at = a.seconds * 0.4, a.seconds * 0.4 + 5
    clips = tempfile.TemporaryDirectory()
    clip = make_clip(clips.name, a.size, a.fps)
    # The killed cameras each on a server of their own; the others share one farm.
    others = [i for i in range(a.streams) if i not in victims]
    farm = Camera(free_port(), clip, len(others)) if others else None
    alone = {v: Camera(free_port(), clip) for v in victims}
    servers = ([farm] if farm else []) + list(alone.values())
    for c in servers:
        c.start()
    urls = {i: farm.url(k) for k, i in enumerate(others)}
    urls.update({v: c.url() for v, c in alone.items()})
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(BIN), "--model", a.model, "--output", f"{tmp}/rec-{{stream}}.mp4", "--metrics", "127.0.0.1:0",
               "--reconnect-max", "0", "--rtsp-transport", "tcp", "--duration", str(a.seconds), "--progress", "none",
               *os.environ.get("SOAK_ARGS", "").split()]
        for i in range(a.streams):
            cmd += ["--input", f"cam{i}={urls[i]}"]
        run = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        base = None
        log = []
        while base is None:
            line = run.stderr.readline()
            if not line:
                sys.exit("soak: gradcam-stream ended before serving metrics:\n" + "".join(log))
            log.append(line)
            if line.startswith("metrics: "):
                base = line.split()[1].rsplit("/metrics", 1)[0]
        # Keep reading stderr so the process never blocks on a full pipe.
        import threading
        threading.Thread(target=lambda: log.extend(run.stderr), daemon=True).start()
        names = [f"cam{i}" for i in range(a.streams)]
        print(f"soak: {a.streams} RTSP streams {a.size} at {a.fps} fps for {a.seconds} s; "
              f"cam{victims[0]} and cam{victims[-1]} killed at {kill_at:.0f} s, back at {back_at:.0f} s", flush=True)
        print(f"{'t (s)':>6} {'RSS MiB':>8} {'in/s':>6} {'out/s':>6}  p95 ms per stream" + " " * 8 + "drops per stream")
        start = time.time()
        last = scrape(base)
        first = dict(last)
        rows, killed, restarted = [], False, False
        next_row = interval
        while run.poll() is None:
            time.sleep(0.5)
            t = time.time() - start
            if not killed and t >= kill_at:
                for v in victims:
                    alone[v].kill()
                killed = True
            if killed and not restarted and t >= back_at:
                for v in victims:
                    alone[v].start()
                restarted = True
            if t >= next_row and run.poll() is None:
                try:
                    now = scrape(base)
                except OSError:
                    break
                dt = interval
                ins = sum(now[("gradcam_stream_frames_in_total", n, "")] - last.get(("gradcam_stream_frames_in_total", n, ""), 0) for n in names)
                outs = sum(now[("gradcam_stream_frames_out_total", n, "")] - last.get(("gradcam_stream_frames_out_total", n, ""), 0) for n in names)
                p = [p95(last, now, n) for n in names]
                d = [int(now[("gradcam_stream_frames_dropped_total", n, "")] - last.get(("gradcam_stream_frames_dropped_total", n, ""), 0)) for n in names]
                rss = rss_mb(run.pid)
                rows.append({"t": t, "rss": rss, "p95": p, "drops": d, "now": now})
                ps = " ".join("-" if x is None else f"{x:.0f}" for x in p)
                print(f"{t:6.0f} {rss:8.0f} {ins / dt:6.1f} {outs / dt:6.1f}  {ps:<24} {' '.join(map(str, d))}", flush=True)
                last = now
                next_row += interval
        code = run.wait()
        for c in servers:
            if c.proc.poll() is None:
                c.kill()
    final = rows[-1]["now"] if rows else first
    ok = True
    if code != 0:
        print(f"FAIL: gradcam-stream exited with {code}:\n" + "".join(log[-20:]))
        ok = False
    recovered = [n for n in (f"cam{v}" for v in victims)
                 if final.get(("gradcam_stream_reconnects_total", n, ""), 0) >= 1]
    print(f"recovery: {len(recovered)} of {len(victims)} killed streams came back ({', '.join(recovered) or 'none'})")
    if len(recovered) < len(victims):
        ok = False
    others = [n for i, n in enumerate(f"cam{i}" for i in range(a.streams)) if i not in victims]
    other_drops = sum(final.get(("gradcam_stream_frames_dropped_total", n, ""), 0) for n in others)
    print(f"drops on the streams not killed: {other_drops:.0f} (target 0)")
    if len(rows) >= 4:
        half = len(rows) // 2
        first_max = max(r["rss"] for r in rows[:half])
        second_max = max(r["rss"] for r in rows[half:])
        growth = second_max / first_max - 1
        p95s = lambda r: max((x for x in r["p95"] if x is not None), default=0)
        ratio = p95s(rows[-1]) / max(p95s(rows[1]), 1e-9)
        print(f"RSS: second half max {second_max:.0f} MiB vs first half max {first_max:.0f} MiB: "
              f"{growth * 100:+.1f}% (target <= +5%)")
        print(f"p95: last interval {p95s(rows[-1]):.0f} ms vs second {p95s(rows[1]):.0f} ms: {ratio:.2f}x (target <= 1.2x)")
        if not a.ci:
            ok = ok and growth <= 0.05 and ratio <= 1.2 and other_drops == 0
    print("soak: " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
