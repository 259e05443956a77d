#!/usr/bin/env python3
"""Writes a test clip where a known object moves: scikit-image's `chelsea` (a cat, ImageNet
class 285) pasted at a known box on a plain textured background, sliding left to right.
Prints the boxes as JSON lines {"frame", "x0", "y0", "x1", "y1"} (x1, y1 exclusive)."""
import argparse
import json

import cv2
import numpy as np
from skimage import data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    w, h = 480, 240
    cat = cv2.resize(data.chelsea(), (180, 120), interpolation=cv2.INTER_AREA)  # RGB
    rng = np.random.default_rng(7)
    background = cv2.GaussianBlur(rng.integers(90, 160, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), 15, (w, h))
    for i in range(args.frames):
        x0 = round(i * (w - cat.shape[1]) / max(args.frames - 1, 1))
        y0 = 60
        frame = background.copy()
        frame[y0:y0 + cat.shape[0], x0:x0 + cat.shape[1]] = cat
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        print(json.dumps({"frame": i, "x0": x0, "y0": y0, "x1": x0 + cat.shape[1], "y1": y0 + cat.shape[0]}))
    writer.release()


if __name__ == "__main__":
    main()
