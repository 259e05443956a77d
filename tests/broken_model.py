"""Writes a split TorchScript model that is broken in one way, with a sidecar that is otherwise
right: gradcam-stream must report each clearly, in one line.

  broken_model.py bad-head OUT.pt      the head does not accept the features (8 channels out,
                                       16 expected): refused when the model loads
  broken_model.py batch-of-one OUT.pt  loads and passes the load-time check (one frame), but
                                       `features` reshapes to a batch of one, so libtorch fails
                                       at run time on any batch of more than one frame
  broken_model.py detector-pairs OUT.pt   a detector whose head gives (boxes, scores) only
  broken_model.py detector-boxes OUT.pt   a detector whose boxes are [B, K, 2]
"""
import json
import sys

import torch


class BadHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(16, 10)

    @torch.jit.export
    def features(self, x):
        return self.c(x)

    @torch.jit.export
    def head(self, a):
        return self.fc(a.mean([2, 3]))

    def forward(self, x):
        return self.head(self.features(x))


class BatchOfOne(BadHead):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 10)

    @torch.jit.export
    def features(self, x):
        return self.c(x).view(1, 8, 8, 8)


class DetectorPairs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.s = torch.nn.Conv2d(8, 1, 1)
        self.b = torch.nn.Conv2d(8, 4, 1)

    @torch.jit.export
    def features(self, x):
        return self.c(x)

    @torch.jit.export
    def head(self, a):
        return self.b(a).flatten(2).transpose(1, 2), self.s(a).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


class DetectorBoxes(DetectorPairs):
    @torch.jit.export
    def head(self, a):
        s = self.s(a).flatten(1)
        return self.b(a)[:, :2].flatten(2).transpose(1, 2), s, s * 0


kind, out = sys.argv[1:3]
model = {"bad-head": BadHead, "batch-of-one": BatchOfOne, "detector-pairs": DetectorPairs,
         "detector-boxes": DetectorBoxes}[kind]()
torch.jit.script(model).save(out)
if kind.startswith("detector"):
    json.dump({"name": kind, "kind": "detector", "target_layer": "c", "input_size": [32, 32], "stride": 4,
               "mean": [0.5] * 3, "std": [0.5] * 3, "classes": ["thing"], "feature_shape": [8, 8, 8],
               "num_classes": 1, "levels": 1, "carry": 0, "level_names": ["stride 4"]},
              open(out[:-3] + ".json", "w"))
    sys.exit(0)
json.dump({"name": kind, "target_layer": "c", "input_size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
           "classes": [str(i) for i in range(10)], "feature_shape": [8, 8, 8], "num_classes": 10},
          open(out[:-3] + ".json", "w"))
