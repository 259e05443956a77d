#!/usr/bin/env python3
"""Writes a test clip where a known object moves: scikit-image's `chelsea` (a cat, ImageNet
class 285) pasted at a known box. Prints the boxes as JSON lines {"frame", "x0", "y0", "x1",
"y1"} (x1, y1 exclusive).

--motion:
  slide     (default) slides left to right over a plain blurred texture, 15 fps
  cross     crosses the frame in 2 s (30 fps) over a real photographed texture (scikit-image's
            `gravel`)
  pan       crosses as `cross` while the camera pans the other way over a wider photo
            (`gravel` then `grass`): the background moves too
  stopstart moves a third of the way in 2/3 s, stops for 5/6 s, moves on, stops, over `gravel`
  still     stays in the middle of `gravel` for 1 s: nothing moves
--frames N shortens or lengthens the clip (a crossing in N frames: N = 30 crosses in 1 s)
"""
import argparse
import json

import cv2
import numpy as np
from skimage import data


def paths(motion, frames, span, pan=0):
    """The cat's x per frame, 0..span, and the camera's x offset into the background."""
    t = np.arange(frames)
    if motion in ("slide", "cross"):
        return np.round(t * span / max(frames - 1, 1)).astype(int), np.zeros(frames, int)
    if motion == "still":
        return np.full(frames, span // 2), np.zeros(frames, int)
    if motion == "pan":
        return np.round(t * span / max(frames - 1, 1)).astype(int), np.round(t * pan / max(frames - 1, 1)).astype(int)[::-1]
    # stopstart: move 20 frames, hold 25, move 20, hold 25: a third of the span each move
    steps = np.concatenate([np.linspace(0, span / 3, 20), np.full(25, span / 3),
                            np.linspace(span / 3, 2 * span / 3, 20), np.full(25, 2 * span / 3)])
    return np.round(steps[:frames]).astype(int), np.zeros(frames, int)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--motion", default="slide", choices=["slide", "cross", "pan", "stopstart", "still"])
    ap.add_argument("--frames", type=int, default=None)
    args = ap.parse_args()
    w, h = (480, 240) if args.motion == "slide" else (640, 360)
    size = (180, 120) if args.motion == "slide" else (192, 128)
    cat = cv2.resize(data.chelsea(), size, interpolation=cv2.INTER_AREA)  # RGB
    if args.motion == "slide":
        fps, frames = 15, args.frames or 60
        rng = np.random.default_rng(7)
        background = cv2.GaussianBlur(rng.integers(90, 160, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    else:
        fps = 30
        frames = args.frames or {"cross": 60, "pan": 60, "stopstart": 90, "still": 30}[args.motion]
        # Real photographed textures (grey): gravel, and for the pan gravel then grass, wider
        # than the frame so the camera has room to move.
        grey = lambda im, width: cv2.cvtColor(cv2.resize(im, (width, h), interpolation=cv2.INTER_AREA),
                                              cv2.COLOR_GRAY2RGB)
        photo = grey(data.gravel(), w)
        if args.motion == "pan":
            photo = np.concatenate([photo, grey(data.grass(), h)], axis=1)
        background = photo
    xs, cams = paths(args.motion, frames, w - cat.shape[1], pan=background.shape[1] - w)
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        x0, y0 = int(xs[i]), (h - cat.shape[0]) // 2
        frame = background[:, cams[i]:cams[i] + w].copy()
        frame[y0:y0 + cat.shape[0], x0:x0 + cat.shape[1]] = cat
        writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        print(json.dumps({"frame": i, "x0": x0, "y0": y0, "x1": x0 + cat.shape[1], "y1": y0 + cat.shape[0]}))
    writer.release()


if __name__ == "__main__":
    main()
