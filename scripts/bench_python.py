#!/usr/bin/env python3
"""`make bench-python`: the Python package against the program and against a pytorch-grad-cam loop.

On samples/bikes.mp4 (250 frames, 640x272), with a torchvision ResNet-18 (seeded random weights,
cut at layer4), on a CUDA GPU where torch sees one (else the CPU), best of BENCH_RUNS (3) each:
1. the program, video written (`--output target/bench/cli.mp4`): frames/s from its `done:` line
2. `gradcam_stream.explain` with the live module, the same video written, every result consumed
   in Python (each map read): frames/s as `run.summary()` reports it (from the first frame, as
   the program counts), and over the whole call (the split, the start and the timing included)
3. the loop a pytorch-grad-cam user writes: frames read with OpenCV (PyAV is not installed
   here), batches of 8 resized and normalized as gradcam-stream does, `GradCAM` on the eager
   module at layer4 for each frame's top class: maps only, nothing drawn or written
Targets (docs/performance.md): 2 >= 0.9x 1, and 2 >= 2x 3 on a CPU, >= 5x 3 on a GPU.
Run with the virtualenv scripts/py_venv.sh makes (the Makefile does).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

import gradcam_stream as gs
from gradcam_stream import split

ROOT = Path(__file__).resolve().parent.parent
BIKES = ROOT / "samples" / "bikes.mp4"
OUT = ROOT / "target" / "bench"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def exported(net):
    """The same module split and written for the program, as explain(model=net) does."""
    path = OUT / "resnet18.pt"
    model, meta = split.from_module(net, "layer4", name="resnet18 (seeded random weights)")
    split.write(split.trace(model, meta), meta, path)
    return path


def program(model):
    o = subprocess.run([str(ROOT / "target/release/gradcam-stream"), "--input", str(BIKES), "--output",
                        str(OUT / "cli.mp4"), "--model", str(model), "--device", DEVICE,
                        "--progress", "none"],
                       capture_output=True, text=True, check=True)
    return float(re.search(r"\(([\d.]+) fps\)", o.stderr).group(1))


def package(net):
    t = time.perf_counter()
    run = gs.explain(BIKES, model=net, layer="layer4", output=OUT / "py.mp4", device=DEVICE,
                     progress=False)
    n = 0
    for r in run:
        float(r.cam.max())
        n += 1
    wall = time.perf_counter() - t
    assert n == 250, n
    return run.summary()["fps"], n / wall


def pytorch_grad_cam_loop(net):
    from pytorch_grad_cam import GradCAM

    net = net.to(DEVICE)
    mean = torch.tensor([0.485, 0.456, 0.406], device=DEVICE).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=DEVICE).view(1, 3, 1, 1)
    cam = GradCAM(model=net, target_layers=[net.layer4])
    cap = cv2.VideoCapture(str(BIKES))
    t = time.perf_counter()
    n, batch = 0, []

    def explain(batch):
        x = torch.from_numpy(np.stack(batch)).to(DEVICE).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        cam(input_tensor=(x / 255 - mean) / std, targets=None)

    while True:
        ok, frame = cap.read()
        if not ok:
            break
        batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        n += 1
        if len(batch) == 8:
            explain(batch)
            batch = []
    if batch:
        explain(batch)
    return n / (time.perf_counter() - t)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count())
    net = resnet18()
    model = exported(net)
    cli = max(program(model) for _ in range(RUNS))
    py = [package(net) for _ in range(RUNS)]
    py_first, py_wall = max(p[0] for p in py), max(p[1] for p in py)
    peer = max(pytorch_grad_cam_loop(resnet18()) for _ in range(RUNS))
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"python package, ResNet-18 (random weights) on bikes.mp4, {where}, best of {RUNS}")
    print("| run | frames/s |")
    print("|---|---|")
    print(f"| the program, video written | {cli:.1f} |")
    print(f"| gradcam_stream.explain, video written, every result read | {py_first:.1f} "
          f"(whole call: {py_wall:.1f}) |")
    print(f"| pytorch-grad-cam loop (OpenCV frames, batch 8, maps only) | {peer:.1f} |")
    ok_cli = py_first >= 0.9 * cli
    factor = 5 if DEVICE == "cuda" else 2
    ok_peer = py_first >= factor * peer
    print(f"explain / program: {py_first / cli:.2f}x (target >= 0.9x: {'met' if ok_cli else 'NOT met'})")
    print(f"explain / pytorch-grad-cam loop: {py_first / peer:.2f}x (target >= {factor}x on "
          f"{'a GPU' if DEVICE == 'cuda' else 'a CPU'}: {'met' if ok_peer else 'NOT met'})")
    sys.exit(0)


if __name__ == "__main__":
    main()
