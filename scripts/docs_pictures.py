#!/usr/bin/env python3
"""Regenerates the pictures in docs/ from the built binary (`make docs`): each CAM method,
colormap, the threshold, the box and top-k on scikit-image photos, and a strip showing what
temporal smoothing does to the maps of samples/bikes.mp4, a vision transformer's map, CenterFace's
boxes with their own maps (and at each level it can be explained at), and the web view's stream
page in headless Chromium."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from skimage import data, io

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/gradcam-stream"
DOCS = ROOT / "docs"


def run(*args):
    subprocess.run([str(BIN), *map(str, args), "--progress", "none"], check=True, capture_output=True)


def smoothing_strip(tmp):
    """Maps of bikes.mp4 frames 150-155, unsmoothed (top) and at --smooth 0.5 (bottom)."""
    rows = []
    for s in ["0", "0.5"]:
        meta = tmp / f"bikes-{s}.jsonl"
        run("--input", ROOT / "samples/bikes.mp4", "--output", "null", "--metadata", meta, "--smooth", s)
        lines = [json.loads(l) for l in open(meta)][150:156]
        tiles = []
        for l in lines:
            cam = np.array(l["cam"]["data"], dtype=np.float32).reshape(l["cam"]["h"], l["cam"]["w"])
            tile = cv2.applyColorMap((cv2.resize(cam, (128, 128)) * 255).astype(np.uint8), cv2.COLORMAP_JET)
            cv2.putText(tile, f"{l['frame']}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
            tiles.append(tile)
        label = np.zeros((128, 150, 3), np.uint8)
        cv2.putText(label, "smooth " + s, (6, 68), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
        rows.append(np.hstack([label, *tiles]))
    cv2.imwrite(str(DOCS / "smoothing.png"), np.vstack(rows))


def transformer(tmp, cat):
    """vit_b_16 (random weights: no ImageNet weights can be downloaded here) explained at its
    default layer, Grad-CAM and EigenCAM side by side: the 14x14 patch grid on the frame."""
    vit = tmp / "vit_b_16.pt"
    subprocess.run([sys.executable, str(ROOT / "scripts/export_model.py"), "--arch", "vit_b_16", "--weights", "random",
                    "--out", str(vit)], check=True, capture_output=True)
    tiles = []
    for m in ["gradcam", "eigencam"]:
        out = tmp / f"vit-{m}.png"
        run("-i", cat, "-o", out, "--model", vit, "--method", m, "--no-label")
        tile = cv2.imread(str(out))
        cv2.putText(tile, f"vit_b_16 {m}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        tiles.append(tile)
    cv2.imwrite(str(DOCS / "vit.png"), np.hstack(tiles))


def detector_pictures(tmp, astronaut):
    """CenterFace on the face clip (one frame, each box with its own map, inside the box and over the
    whole frame), and the same frame explained at the three levels `--layer` offers."""
    clip = ROOT / "samples/carphone_pristine.mp4"
    frames = []
    for maps in ["inside", "full"]:
        out = tmp / f"faces-{maps}.mp4"
        run("--input", clip, "--output", out, "--model", ROOT / "models/centerface.pt", "--box-maps", maps,
            "--max-frames", "40")
        frames.append(frame_at(out, 1.0))
    cv2.imwrite(str(DOCS / "detector.png"), cv2.resize(np.hstack(frames), None, fx=2, fy=2,
                                                        interpolation=cv2.INTER_NEAREST))
    run("-i", astronaut, "-o", DOCS / "detector-astronaut.png", "--model", ROOT / "models/centerface.pt")
    tiles = []
    for layer in ["add", "add_2", "add_7"]:
        model = tmp / f"centerface-{layer}.pt"
        subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "scripts/export_model.py"), "--detector",
                        "centerface", "--layer", layer, "--out", str(model)], check=True, capture_output=True)
        out = tmp / f"level-{layer}.mp4"
        run("--input", clip, "--output", out, "--model", model, "--max-frames", "40")
        tile = frame_at(out, 1.0)
        cv2.putText(tile, layer, (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(tile)
    cv2.imwrite(str(DOCS / "detector-levels.png"), cv2.resize(np.hstack(tiles), None, fx=2, fy=2,
                                                               interpolation=cv2.INTER_NEAREST))


def frame_at(video, t):
    """The frame of `video` shown at `t` seconds, as BGR."""
    png = Path(str(video) + ".png")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(t), "-i", str(video), "-frames:v", "1", str(png)],
                   check=True)
    return cv2.imread(str(png))


def web_screenshot():
    """The web view's stream page, headless Chromium, on bikes.mp4 served as a live camera."""
    import re
    import time
    serve = subprocess.Popen([str(ROOT / "target/release/examples/rtsp_serve"), "0", "/bikes",
                              str(ROOT / "samples/bikes.mp4"), "--loop"], stdout=subprocess.PIPE, text=True)
    try:
        url = serve.stdout.readline().split("serving: ")[1].strip()
        run_ = subprocess.Popen([str(BIN), "--input", f"bikes={url}", "--web", "127.0.0.1:0", "--top-k", "3",
                                 "--progress", "none"], stderr=subprocess.PIPE, text=True)
        try:
            web = None
            while web is None:
                line = run_.stderr.readline()
                if not line:
                    sys.exit("gradcam-stream ended before serving the web view")
                m = re.search(r"web: (\S+)/", line)
                web = m and m.group(1)
            time.sleep(8)
            subprocess.run([sys.executable, str(ROOT / "tests/web_view.py"), "stream", web, "bikes", "--top-k", "3",
                            "--seconds", "20", "--screenshot", str(DOCS / "web-stream.png")], check=True)
        finally:
            run_.terminate()
            run_.wait()
    finally:
        serve.terminate()
        serve.wait()


def main():
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cat, astronaut = tmp / "chelsea.png", tmp / "astronaut.png"
        io.imsave(cat, data.chelsea())
        io.imsave(astronaut, data.astronaut())
        for m in ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]:  # odam = hirescam
            run("-i", cat, "-o", DOCS / f"method-{m.replace('++', 'pp')}.png", "--method", m)
        for c in ["turbo", "inferno", "viridis"]:
            run("-i", cat, "-o", DOCS / f"colormap-{c}.png", "--colormap", c)
        run("-i", cat, "-o", DOCS / "threshold.png", "--threshold", "0.5")
        run("-i", cat, "-o", DOCS / "box.png", "--box")
        run("-i", astronaut, "-o", DOCS / "top-k.png", "--top-k", "3", "--box")
        smoothing_strip(tmp)
        transformer(tmp, cat)
        detector_pictures(tmp, astronaut)
    web_screenshot()
    print(f"pictures written to {DOCS}")


if __name__ == "__main__":
    main()
