"""Merged exports: adapters folded into the kernels, a plain checkpoint that needs no petah_mm.

A classification model becomes mmpretrain's own ``EfficientFormer`` (224x224, its fixed
attention-bias grid); a detector or segmentor keeps ``DenseEfficientFormer`` for other input
sizes, whose keys are mmpretrain's too. Either way inference costs what the plain model costs.
"""
from pathlib import Path
from typing import Dict, Iterable, Union

import torch
from mmengine.config import Config
from torch import nn

from ..utils import check_output_path, save_torch_atomic


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state with every adapter merged into its kernel and the adapter keys dropped."""
    backbone = model.backbone
    backbone.merge_adapters()
    try:
        return {k: v.clone() for k, v in model.state_dict().items() if '.adapter.' not in k}
    finally:
        backbone.unmerge_adapters()


def plain_backbone_config(backbone_cfg: dict) -> dict:
    """The adapter-free backbone a merged checkpoint loads into."""
    classification = list(backbone_cfg.get('out_indices', [3])) == [3] and not backbone_cfg.get(
        'reshape_last_feat', True)
    return dict(type='mmpretrain.EfficientFormer' if classification else 'DenseEfficientFormer',
                arch=backbone_cfg['arch'], out_indices=list(backbone_cfg.get('out_indices', [0, 1, 2, 3])),
                reshape_last_feat=backbone_cfg.get('reshape_last_feat', True))


def export_merged(model: nn.Module, cfg: Config, out_file: Union[str, Path], force: bool = False,
                  inputs: Iterable[Union[str, Path]] = ()) -> Path:
    """Write ``out_file`` (a ``state_dict`` checkpoint) and ``<out_file>.py``, its adapter-free config.

    Existing outputs are refused unless ``force``; ``inputs`` (the training config and checkpoint)
    are never overwritten."""
    out_file, inputs = Path(out_file), [*inputs, cfg.filename] if cfg.filename else list(inputs)
    check_output_path(out_file.with_suffix('.py'), force, inputs)
    save_torch_atomic(dict(state_dict=merged_state_dict(model), meta=dict(merged_from=cfg.filename)), out_file,
                      force, inputs)
    plain = Config(cfg.to_dict())
    plain.model.backbone = plain_backbone_config(cfg.model.backbone)
    if plain.model.backbone.type.startswith('mmpretrain.'):
        plain.pop('custom_imports', None)  # nothing of petah_mm is needed any more
    plain.load_from = str(out_file)
    plain.dump(out_file.with_suffix('.py'))
    return out_file
