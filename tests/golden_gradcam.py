#!/usr/bin/env python3
"""Reference check: pytorch-grad-cam (PyPI grad-cam) on the same frames, model, layer and method.

With --arch ARCH --weights PTH (a torchvision classifier) or --module MOD:FACTORY, the reference
is the eager model itself, hooked at the sidecar's target layer, and a transformer's tokens go
through pytorch-grad-cam's documented reshape transform: independent of the export.

Reads the frames gradcam-stream saw (raw RGBx as GStreamer decoded them, so both sides start
from identical pixels), preprocesses each frame as gradcam-stream does (whole frame resized
bilinearly with antialiasing to the model's input, in float, ImageNet-normalized), and runs the
pytorch_grad_cam class of each --check's method with the target layer = the model's `features`
output and the same target class gradcam-stream reported. Both maps are brought to the input
size with the same cv2.resize; per-frame Pearson correlation must be >= --min-corr. Prints a
summary line per check; every check of one model runs in one Python start (importing torch
costs seconds here).
"""
import argparse
import hashlib
import json
import os
import sys

import map_check
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


class Features(torch.nn.Module):
    def __init__(self, scripted):
        super().__init__()
        self.m = scripted

    def forward(self, x):
        return self.m.features(x)


class Whole(torch.nn.Module):
    """The split TorchScript as one nn.Module, with `features` as a hookable layer."""

    def __init__(self, scripted):
        super().__init__()
        self.m = scripted
        self.features = Features(scripted)
        # A frozen TorchScript has no parameters; pytorch-grad-cam reads the device off one.
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        # Frozen weights are constants, so let the input carry autograd through the network,
        # as it would through an eager model's parameters.
        return self.m.head(self.features(x.detach().requires_grad_(True)))


def reshape_transform(tensor):
    """pytorch-grad-cam's reshape transforms for vision transformers (its tutorials): a ViT's or
    DeiT's tokens [B, N, C] without the leading class tokens, laid on the patch grid; a Swin's
    [B, H, W, C] channels to the front."""
    if tensor.dim() == 4:
        return tensor.permute(0, 3, 1, 2)
    b, n, c = tensor.shape
    side = int(np.sqrt(n))
    result = tensor[:, n - side * side:, :].reshape(b, side, side, c)
    return result.transpose(2, 3).transpose(1, 2)


def eager_model(args):
    """The model before export, and its target layer."""
    if args.arch:
        import torchvision

        model = torchvision.models.get_model(args.arch, weights=None)
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    else:
        import importlib

        mod, _, factory = args.module.partition(":")
        sys.path.insert(0, ".")
        model = getattr(importlib.import_module(mod), factory)()
    return model.eval()


class EigenCAMOtherSign(EigenCAM):
    """pytorch-grad-cam's EigenCAM had its SVD given the component's other sign."""

    def get_cam_image(self, *args, **kwargs):
        return -super().get_cam_image(*args, **kwargs)


class Cache:
    """The reference's maps, kept in target/reference-cache/ under a key of everything they
    depend on: this script, the versions of torch and pytorch-grad-cam, the method, the model
    file (and the eager model's weights or module source), the frames and the target classes.
    A test run that changes none of these reads the maps instead of recomputing them; the
    comparison with ours runs every time. GRADCAM_REFERENCE_CACHE=off computes them afresh."""

    def __init__(self, args, method, frames, classes):
        from importlib.metadata import version

        self.dir = None
        if os.environ.get("GRADCAM_REFERENCE_CACHE") == "off":
            return
        h = hashlib.sha256()
        for part in (open(__file__, "rb").read(), torch.__version__.encode(),
                     version("grad-cam").encode(),
                     method.encode(), str(args.batch_size).encode(), json.dumps(classes).encode(),
                     open(args.model, "rb").read(), open(args.model.rsplit(".", 1)[0] + ".json", "rb").read()):
            h.update(hashlib.sha256(part).digest())
        if args.weights:
            h.update(hashlib.sha256(open(args.weights, "rb").read()).digest())
        if args.module:
            h.update(hashlib.sha256(open(args.module.partition(":")[0] + ".py", "rb").read()).digest())
        for f in frames:
            h.update(hashlib.sha256(np.ascontiguousarray(f).tobytes()).digest())
        here = os.path.dirname(os.path.abspath(__file__))
        self.dir = os.path.join(here, "..", "target", "reference-cache", h.hexdigest()[:32])

    def get(self, start):
        path = self.dir and os.path.join(self.dir, f"{start}.npz")
        if not path or not os.path.exists(path):
            return None
        with np.load(path) as z:
            return [z[k] for k in sorted(z.files)]

    def put(self, start, refs):
        if not self.dir:
            return
        os.makedirs(self.dir, exist_ok=True)
        tmp = os.path.join(self.dir, f".{start}.{os.getpid()}.npz")
        np.savez(tmp, **{f"r{j}": r for j, r in enumerate(refs)})
        os.replace(tmp, os.path.join(self.dir, f"{start}.npz"))


METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
           "hirescam": HiResCAM, "eigencam": EigenCAM}


def check(args, meta, model, method, metadata, allow_prefix, frames):
    """Compare one run of ours (its --metadata lines) with pytorch-grad-cam's `method` on the
    same frames; `model()` gives the reference model and its hooks, made once for all checks."""
    h, w = meta["input_size"]
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    ours = [json.loads(line) for line in open(metadata)]
    if len(frames) < len(ours) or (len(frames) != len(ours) and not allow_prefix):
        sys.exit(f"FAIL: {len(frames)} raw frames, metadata has {len(ours)}")
    frames = frames[:len(ours)]
    if any(l.get("method", "gradcam") != method for l in ours):
        sys.exit(f"FAIL: the metadata's method is not {method}")

    # A principal component's sign is arbitrary: numpy's LAPACK and libtorch's pick it
    # differently for the same matrix. Ours follows a fixed convention; the reference is
    # either sign's map, and each frame is compared with the one it matches.
    cams = [METHODS[method]] + ([EigenCAMOtherSign] if method == "eigencam" else [])
    made = []

    def reference():
        """pytorch-grad-cam's CAMs on the reference model, made when a batch is not cached."""
        if not made:
            eager, hooked = model()
            made.extend(cam(model=eager, **hooked) for cam in cams)
        return made

    corrs = []
    flat = flipped = 0
    cached = Cache(args, method, frames, [l["class"] for l in ours])
    for start in range(0, len(frames), args.batch_size):
        chunk = frames[start:start + args.batch_size]
        lines = ours[start:start + len(chunk)]
        refs = cached.get(start)
        if refs is None:
            x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            x = (x / 255 - mean) / std
            targets = [ClassifierOutputTarget(l["class"]) for l in lines]
            refs = [cam(input_tensor=x, targets=targets) for cam in reference()]
            cached.put(start, refs)  # [B, h, w] each, normalized
        for i, l in enumerate(lines):
            mine = map_check.ours(l, (w, h))
            best = []
            for j, ref in enumerate(refs):
                corr, both_flat = map_check.compare(ref[i], mine)
                best.append(corr)
                flat += int(both_flat and j == 0)
            flipped += int(np.argmax(best) == 1)
            corrs.append(max(best))
    signs = f"  (other sign: {flipped} frames)" if method == "eigencam" else ""
    map_check.verdict(method, corrs, flat, args.min_corr, signs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True, help="raw RGBx frames, as gst-launch's filesink writes them")
    ap.add_argument("--size", required=True, help="WxH of the frames")
    ap.add_argument("--check", nargs=3, action="append", required=True,
                    metavar=("METHOD", "METADATA", "FRAMES"),
                    help="one run of ours to check: its --method, its --metadata file, and `all` "
                         "when it explained the whole clip or `prefix` when only its first frames; "
                         "repeat for more runs of the same model (one Python start for all)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--min-corr", type=float, default=0.98)
    ap.add_argument("--arch", help="reference: this torchvision classifier, eager, with --weights")
    ap.add_argument("--weights", help="the state dict the model was exported from")
    ap.add_argument("--module", help="reference: this factory's eager model")
    args = ap.parse_args()
    for method, _, frames in args.check:
        if method not in METHODS or frames not in ("all", "prefix"):
            ap.error(f"--check {method} … {frames}: the method is one of {sorted(METHODS)}, "
                     "the frames all or prefix")

    meta = json.load(open(args.model.rsplit(".", 1)[0] + ".json"))
    fw, fh = map(int, args.size.split("x"))
    raw = np.fromfile(args.raw, dtype=np.uint8)
    frames = list(raw.reshape(-1, fh, fw, 4)[..., :3])

    made = {}

    def model():
        """The reference model and its pytorch-grad-cam hooks, loaded once."""
        if not made:
            if args.arch or args.module:
                eager = eager_model(args)
                made["hooked"] = {"target_layers": [eager.get_submodule(meta["target_layer"])],
                                  "reshape_transform": reshape_transform}
            else:
                eager = Whole(torch.jit.load(args.model).eval()).eval()
                made["hooked"] = {"target_layers": [eager.features]}
            made["eager"] = eager
        return made["eager"], made["hooked"]

    failed = []
    for method, metadata, whole in args.check:
        try:
            check(args, meta, model, method, metadata, whole == "prefix", frames)
        except SystemExit as e:
            failed.append(f"{method}: {e.code}")
    if failed:
        sys.exit("\n".join(failed))


if __name__ == "__main__":
    main()
