"""A seeded, randomly initialised EfficientFormer checkpoint that stands in for pretrained weights.

Nothing can be downloaded on the machines the toy runs target, yet every toy task must share
the *same* frozen backbone, as tasks on a device do: this writes one such backbone, in
mmpretrain's classification-checkpoint layout (``state_dict`` with ``backbone.`` keys), so the
toy configs load it through the usual ``init_cfg=dict(type='Pretrained', ...)``.
"""
from pathlib import Path

import torch

from ..utils import save_torch_atomic


def make_toy_backbone(path, arch: str = 'l1', seed: int = 0) -> Path:
    """Write the checkpoint unless it exists; the same (arch, seed) always gives the same weights."""
    from mmpretrain.models import EfficientFormer

    path = Path(path)
    if path.exists():
        return path
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        trunk = EfficientFormer(arch=arch, out_indices=[3])
    state = {f'backbone.{k}': v for k, v in trunk.state_dict().items()}
    save_torch_atomic(dict(state_dict=state, meta=dict(note=f'random EfficientFormer-{arch}, seed {seed}')), path)
    return path
