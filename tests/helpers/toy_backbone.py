"""A tiny hybrid backbone (conv stem + attention blocks) that declares its own adapter targets.

It proves the engine knows no particular backbone: everything it adapts is named here.
"""
import torch
from mmengine.model import BaseModule
from torch import nn

from petah_mm.adapters import AdaptedBackboneMixin


class ToyBlock(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        x = x + self.proj(torch.softmax(q @ k.transpose(1, 2), -1) @ v)
        return x + self.fc2(torch.relu(self.fc1(x)))


class ToyHybrid(AdaptedBackboneMixin, BaseModule):
    arch_name = 'toy'
    adapter_targets = dict(
        attn=[r'blocks\.\d+\.(qkv|proj)'], mlp=[r'blocks\.\d+\.fc[12]'], conv=[r'stem\.(0|3)'])

    def __init__(self, adapter, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16))
        self.blocks = nn.Sequential(ToyBlock(16), ToyBlock(16))
        self.setup_adapter(adapter)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.blocks(x)
