"""User configs that point a shipped toy config (configs/toy/) at generated toy data and a toy backbone.

The task kind comes from the base config's file name, looked up in :data:`TOY_CONFIGS`: explicit, needs no
mmdet / mmseg / mmpretrain import, and refuses any other config, because the generated toy data only fits
the pipelines, classes and image sizes of these three.
"""
import os
from pathlib import Path

from ..utils import atomic_write

TOY_CONFIGS = {
    'cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py': 'coco',
    'fpn_ef-l1-petah2_toy-ade20k.py': 'ade20k',
    'ef-l1-petah2_toy-cls.py': 'cls',
}
_WRITTEN_KEYS = ('_base_', 'model', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
                 'test_evaluator')


def write_toy_user_config(path, base, data_root, backbone, batch_size=None, **overrides) -> Path:
    """Write ``path``: ``_base_`` ``base``, its data under ``data_root`` and its backbone from ``backbone``.

    ``batch_size`` sets the training batch (None keeps the base's); every other ``key=value`` becomes a line
    ``key = repr(value)``. Paths are written absolute, because mmengine resolves ``_base_`` against the
    user config's folder, not the working directory. COCO's mmdet configs join ``data_root + ann_file``,
    hence its trailing slash and the evaluators' ``ann_file``.
    """
    base = Path(os.path.abspath(base))
    kind = TOY_CONFIGS.get(base.name)
    if kind is None:
        raise ValueError(f'{base} is not a toy config write_toy_user_config knows; the known toy configs '
                         f'(configs/toy/) are {", ".join(TOY_CONFIGS)}. The generated toy data only fits those; '
                         'for another config set data_root in your own config.')
    if not base.is_file():
        raise FileNotFoundError(f'toy config {base} does not exist; pass the path of configs/toy/{base.name} '
                                'in a petah_mm checkout')
    clashes = sorted(set(overrides) & set(_WRITTEN_KEYS))
    if clashes:
        raise ValueError(f'overrides {clashes} would replace the data roots and backbone this writes; change '
                         "their other fields with the tool's --cfg-options instead")
    data_root = os.path.abspath(data_root)
    if kind == 'coco':
        data_root = os.path.join(data_root, '')
    batch = '' if batch_size is None else f'batch_size={batch_size}, '
    lines = [f'_base_ = {str(base)!r}',
             f'model = dict(backbone=dict(init_cfg=dict(checkpoint={os.path.abspath(backbone)!r})))',
             f'train_dataloader = dict({batch}dataset=dict(data_root={data_root!r}))',
             f'val_dataloader = dict(dataset=dict(data_root={data_root!r}))',
             'test_dataloader = val_dataloader']
    if kind == 'coco':
        lines += [f"val_evaluator = dict(ann_file={data_root + 'annotations/instances_val2017.json'!r})",
                  'test_evaluator = val_evaluator']
    lines += [f'{key} = {value!r}' for key, value in overrides.items()]
    with atomic_write(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return Path(path)
