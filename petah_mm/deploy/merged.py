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
from ..utils import check_output_path, save_torch_atomic, write_bytes_atomic


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


def merged_output_paths(out_file: Union[str, Path], force: bool = False,
                        inputs: Iterable[Union[str, Path]] = ()) -> Tuple[Path, Path]:
    """``(checkpoint, config)`` that :func:`export_merged` writes for ``out_file``, or the reason it may not:
    one would overwrite an input, an existing file (without ``force``), or the other (``out.py``)."""
    out_file = Path(out_file)
    config_file = out_file.with_suffix('.py')
    if config_file == out_file:
        raise ValueError(f'{str(out_file)!r}: the merged checkpoint and its config ({str(config_file)!r}) would '
                         'be the same file; name the checkpoint with another suffix, e.g. .pth')
    for path in (config_file, out_file):
        check_output_path(path, force, inputs)
    return out_file, config_file


def export_merged(model: nn.Module, cfg: Config, out_file: Union[str, Path], force: bool = False,
                  inputs: Iterable[Union[str, Path]] = ()) -> Path:
    """Write ``out_file`` (a ``state_dict`` checkpoint) and ``<out_file>.py``, its adapter-free config.

    Both are written atomically, and together: if the config cannot be written, a checkpoint this
    call created is removed again. Existing outputs are refused unless ``force``; ``inputs`` (the
    training config and checkpoint) are never overwritten, and neither is the checkpoint by its
    own config."""
    inputs = [*inputs, cfg.filename] if cfg.filename else list(inputs)
    out_file, config_file = merged_output_paths(out_file, force, inputs)
    plain = Config(cfg.to_dict())
    plain.model.backbone = without_pretrained(model.backbone.plain_backbone_config(tested_input_size(cfg)))
    if not needs_petah_mm(plain.model.backbone, cfg.get('default_scope')):
        plain.pop('custom_imports', None)  # nothing of petah_mm is needed any more
    plain.load_from = str(out_file)
    save_torch_atomic(dict(state_dict=merged_state_dict(model), meta=dict(merged_from=cfg.filename)), out_file,
                      force, inputs)
    try:
        write_bytes_atomic(config_file, plain.pretty_text.encode(), force, [*inputs, out_file])
    except BaseException:
        if not force:  # created by this call a moment ago (it refused an existing file): not half an export
            out_file.unlink(missing_ok=True)
        raise
    return out_file
