"""Merged exports: adapters folded into the kernels, a plain checkpoint and its adapter-free config.

The adapted backbone names the plain backbone its merged weights load into
(``plain_backbone_config``), for the input size the config tests at: a wrapped backbone is its
own inner backbone (no petah_mm needed), each family decides for itself. Either way inference
costs what the plain model costs.
"""
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

from ..adapters import is_adapter_key
from ..models import without_pretrained
from ..utils import check_output_path, save_torch_atomic


@torch.no_grad()
def merged_state_dict(model: nn.Module, backbone: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """``model``'s state with every adapter of ``backbone`` (default: ``model.backbone``) merged into its
    kernel and the adapter keys dropped; the model itself is left unmerged."""
    backbone = model.backbone if backbone is None else backbone
    backbone.merge_adapters()
    try:
        return {k: v.clone() for k, v in model.state_dict().items() if not is_adapter_key(k)}
    finally:
        backbone.unmerge_adapters()


def tested_input_size(cfg: Config) -> Optional[Tuple[int, int]]:
    """(H, W) of every test input if the test pipeline fixes it (a final crop), else None."""
    size = None
    for step in cfg.test_dataloader.dataset.pipeline:
        if 'crop_size' in step:
            size = step['crop_size']
        elif step['type'].endswith('Resize') and 'scale' in step and not step.get('keep_ratio', False):
            size = step['scale']
    if size is None:
        return None
    width, height = (size, size) if isinstance(size, int) else size  # OpenMMLab sizes are (w, h)
    return height, width


def needs_petah_mm(backbone_cfg: dict, scope: Optional[str]) -> bool:
    from ..models.backbones.petah_backbone import backbone_class
    with DefaultScope.overwrite_default_scope(scope):
        return backbone_class(backbone_cfg['type']).__module__.startswith('petah_mm')


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
    plain.model.backbone = without_pretrained(model.backbone.plain_backbone_config(tested_input_size(cfg)))
    if not needs_petah_mm(plain.model.backbone, cfg.get('default_scope')):
        plain.pop('custom_imports', None)  # nothing of petah_mm is needed any more
    plain.load_from = str(out_file)
    plain.dump(out_file.with_suffix('.py'))
    return out_file
