#!/usr/bin/env python3
"""Reference check for Keras models: Grad-CAM computed on the Keras model itself, as the Keras
Grad-CAM example computes it (keras.io/examples/vision/grad_cam), independent of the export.

The frames are the ones gradcam-stream saw (raw RGBx), resized as gradcam-stream resizes them,
then preprocessed by the model family's own `keras.applications.<family>.preprocess_input`
(not by our sidecar). A model with the final softmax removed gives [conv output, scores];
the gradient of each frame's class score (the class gradcam-stream reported) with respect to
the conv output, averaged over space, weighs its channels. Per-frame Pearson correlation with
our maps must be >= --min-corr. Our exported graphs must name no device. Every --check runs in
one Python start (importing Keras and torch costs seconds here).
"""
import argparse
import importlib
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

import cv2  # noqa: E402
import keras  # noqa: E402
import map_check  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def pinned(model):
    """How many device constants the graphs of our exported model hold. Keras moves each tensor
    to its device, and a trace keeps such moves: a model pinned to the CPU fails on a GPU,
    which no CPU run shows. The graphs must name no device."""
    m = torch.jit.load(model)
    return sum("Device = prim::Constant" in str(getattr(m, k).graph) for k in ("features", "head", "forward"))


def check(args, keras_file, preprocess, model_file, metadata):
    """Our maps of one run (its --metadata lines) against the Keras-side Grad-CAM."""
    devices = pinned(model_file)
    if devices:
        sys.exit(f"FAIL: the exported graphs of {keras_file} name a device {devices} times")
    meta = json.load(open(model_file.rsplit(".", 1)[0] + ".json"))
    h, w = meta["input_size"]
    ours = [json.loads(line) for line in open(metadata)]
    model = keras.saving.load_model(keras_file, compile=False)
    model.layers[-1].activation = None  # as the Keras example: scores, not probabilities
    layer = model.get_layer(meta["target_layer"])
    if isinstance(model, keras.Sequential):
        def grad_model(x):  # a Sequential's layers one after the other, keeping the layer's output
            for l in model.layers:
                x = l(x)
                if l is layer:
                    conv = x
            return conv, x
    else:
        grad_model = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    if preprocess == "none":
        def prep(x):
            return x
    else:
        prep = importlib.import_module(f"keras.applications.{preprocess}").preprocess_input

    fw, fh = map(int, args.size.split("x"))
    frames = np.fromfile(args.raw, dtype=np.uint8).reshape(-1, fh, fw, 4)[: len(ours), ..., :3]
    if len(frames) != len(ours):
        sys.exit(f"FAIL: {len(frames)} raw frames for {len(ours)} metadata lines")
    x = torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    x = prep(x.permute(0, 2, 3, 1).numpy().copy())  # [B, h, w, 3], the family's own preprocessing
    conv, scores = grad_model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    classes = torch.tensor([l["class"] for l in ours])
    score = scores[torch.arange(len(ours)), classes].sum()
    grads = torch.autograd.grad(score, conv)[0]  # [B, h', w', C]
    pooled = grads.mean(dim=(1, 2))  # [B, C]
    heat = torch.relu((conv * pooled[:, None, None, :]).sum(-1)).detach().numpy()  # [B, h', w']

    corrs, flat = [], 0
    for ref, l in zip(heat, ours):
        corr, both_flat = map_check.compare(cv2.resize(ref.astype(np.float32), (w, h)), map_check.ours(l, (w, h)))
        corrs.append(corr)
        flat += int(both_flat)
    map_check.verdict(model.name, corrs, flat, args.min_corr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", nargs=4, action="append", required=True,
                    metavar=("KERAS", "PREPROCESS", "MODEL", "METADATA"),
                    help="one exported model to check: the .keras or .h5 file that was exported, the "
                         "keras.applications module whose preprocess_input to use (resnet50, "
                         "mobilenet_v2, …, or none), our exported model (its sidecar names the layer) "
                         "and the --metadata of our run with it; repeat for more (one Python start)")
    ap.add_argument("--raw", required=True)
    ap.add_argument("--size", required=True, help="WxH of the frames")
    ap.add_argument("--min-corr", type=float, default=0.98)
    args = ap.parse_args()
    failed = []
    for keras_file, preprocess, model_file, metadata in args.check:
        try:
            check(args, keras_file, preprocess, model_file, metadata)
        except SystemExit as e:
            failed.append(f"{keras_file}: {e.code}")
    if failed:
        sys.exit("\n".join(failed))


if __name__ == "__main__":
    main()
