"""Writes a split TorchScript model that loads and passes the load-time check (one frame) but
fails in libtorch at run time on any batch of more than one frame (`features` reshapes to a
batch of one): gradcam-stream must report that as one line, not a C++ backtrace."""
import json
import sys

import torch


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(8, 10)

    @torch.jit.export
    def features(self, x):
        return self.c(x).view(1, 8, 8, 8)

    @torch.jit.export
    def head(self, a):
        return self.fc(a.mean([2, 3]))

    def forward(self, x):
        return self.head(self.features(x))


out = sys.argv[1]
torch.jit.script(M()).save(out)
json.dump({"name": "batch-of-one", "target_layer": "c", "input_size": [32, 32], "mean": [0.5] * 3,
           "std": [0.5] * 3, "classes": [str(i) for i in range(10)], "feature_shape": [8, 8, 8],
           "num_classes": 10},
          open(out[:-3] + ".json", "w"))
