#!/usr/bin/env python3
"""Run the workspace's test suites (each tests/*.rs binary, the unit tests, the element's, and
the Python package's) in two lanes at once, for `make test`.

Most of a live suite's time is real time: cameras at 25 frames/s, a lossy link's recovery, a
browser watching the web view. Run one after another, the machine mostly waits. So:
  live lane     the suites that watch time pass, one after another, at normal priority, so
                their cameras and latency bounds see the machine as if alone;
  compute lane  every other suite (exports, references, long explanations) and then the
                Python package's tests, one after another, at the lowest CPU priority
                (nice 19): they take what the live lane leaves.
Inside a suite the tests run one at a time (--test-threads=1), as they were written to.

Each suite's output is printed whole when it ends, then a table of the suites and their
times. Exit status 1 if any failed.

  python3 scripts/run_tests.py [--one-lane] [--only NAME,NAME]
    --one-lane   everything one after another at normal priority (how a timing is compared)
    --only       just these suites (`python` is the Python package's)
Environment: CARGO (cargo), CARGO_FLAGS (--release --locked).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The suites that watch real time pass (a clock, a camera's pace, a network's recovery, a
# latency bound): never starved by the compute lane. Longest first, so the lanes end together.
LIVE = ["streams", "web", "lossy", "rtsp", "live", "sound", "shards", "stop"]
# The compute lane's order: the longest Rust suites first, so that they overlap the live lane,
# and the Python package's last (third or last made no clear difference: 14m01s to 14m38s for
# the whole make test either way). A suite not named here runs before it, in name order.
COMPUTE = ["golden", "detectors", "errors", "media", "explain", "video", "element", "keras", "models", "engine"]


class Suite:
    def __init__(self, name, argv, cwd, nice):
        self.name, self.argv, self.cwd, self.nice = name, argv, cwd, nice
        self.seconds = None
        self.code = None
        self.output = ""

    def run(self):
        start = time.monotonic()
        # Output to a file, not a pipe: a suite that writes a lot never blocks on a full pipe.
        with tempfile.TemporaryFile(mode="w+b") as out:
            p = subprocess.run(
                self.argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)
            out.seek(0)
            self.output = out.read().decode("utf-8", "replace")
        self.code = p.returncode
        self.seconds = time.monotonic() - start


def test_binaries(cargo, flags):
    """Build every test binary of the workspace; (name, executable, package folder) each."""
    cmd = [cargo, "test", *flags, "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"error: building the tests failed ({shlex.join(cmd)})")
    found = []
    for line in p.stdout.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
            t = m["target"]
            # A library's and a binary's unit tests share the crate's name: tell them apart.
            kind = t["kind"][0]
            name = t["name"] if kind == "test" else f"{t['name']} ({kind})"
            found.append((name, m["executable"], str(Path(m["manifest_path"]).parent)))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one-lane", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    cargo = os.environ.get("CARGO", "cargo")
    flags = shlex.split(os.environ.get("CARGO_FLAGS", "--release --locked"))
    only = {n for n in a.only.split(",") if n}
    compute_nice = 0 if a.one_lane else 19

    live, compute = [], []
    for name, exe, cwd in test_binaries(cargo, flags):
        if only and name not in only:
            continue
        argv = [exe, "--test-threads=1"]
        if name in LIVE:
            live.append(Suite(name, argv, cwd, 0))
        else:
            compute.append(Suite(name, argv, cwd, compute_nice))
    if not only or "python" in only:
        compute.append(Suite("python", ["make", "--no-print-directory", "test-python"], str(ROOT), compute_nice))
    live.sort(key=lambda s: LIVE.index(s.name))
    compute.sort(key=lambda s: (s.name == "python",
                                COMPUTE.index(s.name) if s.name in COMPUTE else len(COMPUTE), s.name))
    if only - {s.name for s in live + compute}:
        sys.exit(f"error: no suite called {', '.join(sorted(only - {s.name for s in live + compute}))}")

    lanes = [live + compute] if a.one_lane else [live, compute]
    lock = threading.Lock()
    start = time.monotonic()

    def lane(suites):
        for s in suites:
            s.run()
            with lock:
                verdict = "ok" if s.code == 0 else f"FAILED (exit {s.code})"
                print(f"\n=== {s.name}: {verdict} in {s.seconds:.0f} s ===", flush=True)
                print(s.output.rstrip(), flush=True)

    threads = [threading.Thread(target=lane, args=(l,)) for l in lanes if l]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    total = time.monotonic() - start
    print(f"\n{'suite':<28} {'lane':<8} {'s':>6}  result")
    for s in live + compute:
        where = "one" if a.one_lane else ("live" if s in live else "compute")
        print(f"{s.name:<28} {where:<8} {s.seconds:>6.0f}  {'ok' if s.code == 0 else 'FAILED'}")
    failed = [s.name for s in live + compute if s.code != 0]
    print(f"{len(live + compute)} suites in {total / 60:.1f} min; "
          + (f"failed: {', '.join(failed)}" if failed else "all passed"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
