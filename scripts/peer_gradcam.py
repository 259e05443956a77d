#!/usr/bin/env python3
"""The peer: what a Python user does instead of gradcam-stream, for `make bench`.

OpenCV reads the video, PyPI grad-cam's GradCAM explains batches of the same size with the
same eager EfficientNet-Lite0 and the same target layer (the output of `extract_features`),
show_cam_on_image overlays, OpenCV writes an mp4. Prints one JSON line with the throughput.

`--model FILE.pt` explains with gradcam-stream's own frozen TorchScript file instead of the eager
model, so the two compare like with like. pytorch-grad-cam reads the device off a parameter,
which a frozen module lacks, and its hooks need activations that require grad (a frozen
module's weights are constants): the wrapper below supplies both. `--device` runs it on a GPU.
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_model import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402


class FrozenSplit(torch.nn.Module):
    """A split TorchScript model (features, head) as one module pytorch-grad-cam can hook."""

    def __init__(self, scripted):
        super().__init__()
        self.scripted = scripted
        self.tap = torch.nn.Identity()  # the target layer: features' output
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # the device

    def forward(self, x):
        return self.scripted.head(self.tap(self.scripted.features(x).detach().requires_grad_()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", help="a split TorchScript file (gradcam-stream's) instead of the eager model")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()

    if args.model:
        model = FrozenSplit(torch.jit.load(args.model, map_location=args.device).eval()).to(args.device).eval()
        cam = GradCAM(model=model, target_layers=[model.tap])
    else:
        split, _ = efficientnet_lite0()  # eager modules: features = extract_features, head = pool + fc
        model = torch.nn.Sequential(split.feat, split.hd).eval().to(args.device)
        cam = GradCAM(model=model, target_layers=[split.feat])
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)

    cap = cv2.VideoCapture(args.input)
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    frames = 0
    done = False
    start = time.time()  # like gradcam-stream's own figure: from the first frame, model loaded
    while not done:
        batch = []
        while len(batch) < args.batch_size:
            ok, bgr = cap.read()
            if not ok:
                done = True
                break
            batch.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not batch:
            break
        x = np.stack([(cv2.resize(f, (224, 224)).astype(np.float32) / 255 - mean) / std for f in batch])
        maps = cam(input_tensor=torch.from_numpy(x).permute(0, 3, 1, 2).to(args.device), targets=None)  # top-1
        for f, m in zip(batch, maps):
            vis = show_cam_on_image(f.astype(np.float32) / 255, cv2.resize(m, (w, h)), use_rgb=True)
            out.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
            frames += 1
    out.release()
    secs = time.time() - start
    print(json.dumps({"bench": "peer", "model": args.model or "eager", "device": args.device, "input": args.input,
                      "frames": frames, "seconds": round(secs, 2), "fps": round(frames / secs, 2)}))


if __name__ == "__main__":
    main()
