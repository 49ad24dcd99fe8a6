"""A task's test pipeline for single images: built once in the task's scope, and refusing an image whose
size one of its resize steps cannot handle, naming the step, before that step runs.

A keep-ratio resize of a very elongated image (10000x10 into ``Resize(scale=(192, 160))``) makes its
short side a fraction of a pixel, which OpenCV refuses with ``inv_scale_x > 0``; a few pixels would pass
OpenCV but leave the backbone nothing to see. A resize can also grow without bound: ``ResizeEdge`` scales
the *short* side to its scale, so a 10000x10 image into ``ResizeEdge(scale=72)`` would become 72000x72. The
output size of each resize step is computed with the library's own rule before the step runs, and must
keep every side at least :data:`MIN_SIDE` pixels and at most :data:`MAX_SIDE`, and its area at most
:data:`MAX_AREA` (the package schema bounds every stated scale by :data:`MAX_SIDE` already).
"""
from pathlib import Path
from typing import Optional, Tuple, Union

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope

from .package_schema import MAX_AREA, MAX_SIDE

#: the smallest side a resized test image may have: the output stride of the backbones' last stage
MIN_SIDE = 32

Size = Tuple[int, int]  # (height, width), as numpy images are shaped


def resized_size(step: dict, size: Size) -> Optional[Size]:
    """(h, w) that the test-pipeline ``step`` resizes an (h, w) image to, for mmpretrain's ``ResizeEdge`` and
    mmcv's ``Resize`` (which mmdet and mmseg use), with or without ``keep_ratio``; None for any other step."""
    name, (h, w) = step['type'].split('.')[-1], size
    if name == 'ResizeEdge':
        scale, edge = step['scale'], step.get('edge', 'short')
        if edge == 'short' and w < h or edge == 'long' and w > h or edge == 'width':
            return int(scale * h / w), scale
        return scale, int(scale * w / h)
    if name != 'Resize':
        return None
    scale = step.get('scale')
    if not step.get('keep_ratio', False):
        width, height = (scale, scale) if isinstance(scale, int) else scale  # OpenMMLab sizes are (w, h)
        return (height, width) if scale is not None else None
    if scale is None and isinstance(step.get('scale_factor'), (int, float)):
        return int(h * step['scale_factor'] + 0.5), int(w * step['scale_factor'] + 0.5)
    if scale is None:
        return None
    new_w, new_h = mmcv.rescale_size((w, h), (scale, scale) if isinstance(scale, int) else tuple(scale))
    return new_h, new_w


def check_image_size(step: dict, size: Size, image_path) -> None:
    """Refuse an (h, w) image that ``step`` would shrink below :data:`MIN_SIDE` on a side, or grow beyond
    :data:`MAX_SIDE` on a side or :data:`MAX_AREA` in area."""
    new = resized_size(step, size)
    if new is None:
        return
    if min(new) < MIN_SIDE:
        problem = f'under {MIN_SIDE} pixels on a side, which the model cannot process'
    elif max(new) > MAX_SIDE or new[0] * new[1] > MAX_AREA:
        problem = (f'beyond the {MAX_SIDE} pixels a side and {MAX_AREA} pixels of area a resize step may produce '
                   '(the memory it would take is unbounded)')
    else:
        return
    settings = ', '.join(f'{k}={v!r}' for k, v in step.items() if k != 'type')
    raise ValueError(f'{image_path}: the test pipeline step {step["type"]}({settings}) would resize this '
                     f'{size[1]}x{size[0]} (width x height) image to {new[1]}x{new[0]}, {problem}; crop the image to '
                     'a less elongated shape')


class ImagePipeline:
    """A model's test pipeline without its annotation steps, for one image path at a time.

    The transforms are built once, in the task's default scope, so running them needs no process-wide
    scope (two tasks of different libraries can run from threads)."""

    def __init__(self, cfg: Config):
        self.steps = [t for t in cfg.test_dataloader.dataset.pipeline if 'Annotations' not in t['type']]
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            self.transforms = Compose(self.steps).transforms  # one transform per step

    def __call__(self, image_path: Union[str, Path]) -> dict:
        return self.run(dict(img_path=str(image_path), img_id=0), self.steps, self.transforms, image_path)

    def from_array(self, image: np.ndarray) -> dict:
        """An (H, W, 3) uint8 image, as the loading step would read it, through the other steps."""
        data = dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2], img_path='<probe image>',
                    img_id=0)
        loads = [i for i, step in enumerate(self.steps) if step['type'].startswith('LoadImage')]
        first = loads[-1] + 1 if loads else 0
        return self.run(data, self.steps[first:], self.transforms[first:], 'the probe image')

    @staticmethod
    def run(data: dict, steps, transforms, image_path) -> dict:
        for step, transform in zip(steps, transforms, strict=True):
            if data.get('img') is not None:
                check_image_size(step, data['img'].shape[:2], image_path)
            data = transform(data)
            if data is None:
                raise ValueError(f'{image_path}: the test pipeline step {step["type"]} dropped the image')
        return data
