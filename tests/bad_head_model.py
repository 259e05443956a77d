"""Writes a split TorchScript model whose head does not accept its features (8 channels out,
16 expected), with a sidecar that is otherwise right: gradcam-stream must refuse it clearly."""
import json
import sys

import torch


class M(torch.nn.Module):
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


out = sys.argv[1]
torch.jit.script(M()).save(out)
json.dump({"name": "bad", "target_layer": "c", "input_size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
           "classes": [str(i) for i in range(10)], "feature_shape": [8, 8, 8], "num_classes": 10},
          open(out[:-3] + ".json", "w"))
