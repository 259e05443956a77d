"""A user-defined model for the export test: any nn.Module a factory returns."""
import torch
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


class Block(nn.Module):
    """A pre-norm transformer block, as ViT and DeiT have."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Deit(nn.Module):
    """A small DeiT: 16x16 patches of a 224x224 input, a class and a distillation token before
    the 14x14 patch tokens, and the mean of the two tokens' classifiers."""

    def __init__(self, dim=64, classes=5):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, stride=16)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 2 + 14 * 14, dim) * 0.02)
        self.blocks = nn.Sequential(Block(dim, 4), Block(dim, 4))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.head_dist = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # [B, 196, dim]
        lead = torch.cat([self.cls_token, self.dist_token], 1).expand(x.shape[0], -1, -1)
        x = self.norm(self.blocks(torch.cat([lead, x], 1) + self.pos))
        return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2


def deit():
    torch.manual_seed(5)  # the reference check rebuilds the same weights
    return Deit().eval()


class Branchy(Toy):
    """A forward that branches on a tensor's value: torch.fx cannot trace it."""

    def forward(self, x):
        if x.mean() > 0:
            x = -x
        return super().forward(x)


def branchy():
    return Branchy()


def broken():
    raise ImportError("no module named 'mylayers'")


class Pinned(Toy):
    """A head that makes a tensor on the CPU: traced, it could run nowhere else."""

    def forward(self, x):
        p = self.pool(self.body(self.stem(x))).flatten(1)
        return self.fc(p + torch.zeros_like(p, device="cpu"))


def pinned():
    return Pinned()


class Mixer(nn.Module):
    """A layer whose 110 tokens are no patch grid (100 would be, after 10 leading ones: too many)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 16, stride=16)
        self.mix = nn.Linear(196, 110)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2)  # [B, 16, 196]
        t = self.norm(self.mix(t).transpose(1, 2))  # [B, 110, 16]
        return self.fc(t.mean(1))


def mixer():
    return Mixer()
