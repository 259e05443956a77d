"""A user-defined model for the export test: any nn.Module a factory returns."""
from torch import nn


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, stride=4, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 7)

    def forward(self, x):
        return self.fc(self.pool(self.body(self.stem(x))).flatten(1))


def make():
    return Toy()
