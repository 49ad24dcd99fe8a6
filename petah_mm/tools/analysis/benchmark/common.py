"""What every benchmark job shares: the workload (backbone of a preset, classifier), precisions, row names."""
from contextlib import nullcontext

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from petah_mm.adapters.presets import preset
from petah_mm.models import without_pretrained

TRUNK = dict(out_indices=[3], reshape_last_feat=False)  # the classification trunk, as in the paper
NUM_CLASSES = 100
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# --amp measures what tools/train.py --amp trains with: BF16OptimWrapper on the CPU, AmpOptimWrapper's fp16 on
# CUDA (bf16 autocast also raises on GPUs without bf16, e.g. T4 and V100 with torch 2.1)
AMP_PRECISION = {'cpu': 'bf16', 'cuda': 'fp16'}


def backbone_cfg(args) -> dict:
    """``model.backbone`` of --config loading no weights, or the EfficientFormer trunk."""
    if args.config is None:
        return dict(type='PETAHEfficientFormer', arch=args.arch, **TRUNK)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None or 'adapter' not in backbone:
        raise KeyError(f'{args.config} has no model.backbone with an adapter=dict(...) argument; '
                       'benchmark.py switches methods through that argument')
    return without_pretrained(backbone.to_dict())


def backbone_for(args, method: str):
    backbone = MODELS.build(dict(backbone_cfg(args), adapter=preset(method)))
    return backbone.to(args.device)


class Classifier(nn.Module):
    """Backbone + global average pooling + linear head: the training-step workload."""

    def __init__(self, backbone, channels):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(channels, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].flatten(2).mean(-1))


def autocast(args, precision):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(torch.device(args.device).type, dtype=dtype)


def precisions(args):
    return ['fp32', AMP_PRECISION[torch.device(args.device).type]] if args.amp else ['fp32']


def row_name(name, precision):
    return name if precision == 'fp32' else f'{name} ({precision})'
