"""Let mmdeploy 1.3.1 export on torch >= 2.9, for the length of one export and no longer.

mmdeploy 1.3.1 (the latest release) predates two changes of ``torch.onnx``:

* torch 2.9 made the dynamo exporter the default of ``torch.onnx.export``. mmdeploy's rewriters
  and symbolics are written for the TorchScript exporter, and mmdeploy calls ``torch.onnx.export``
  without ``dynamo=``; under dynamo the two-stage detector fails ("The tensor has a non-zero number
  of elements, but its data is not allocated yet"). The layer makes ``torch.onnx.export`` default to
  ``dynamo=False``.
* torch removed ``torch.onnx.symbolic_opset9._cast_Long``, which mmdeploy's RoIAlign symbolic
  imports for the ONNX ``RoiAlign`` op (``mmdeploy/mmcv/ops/roi_align.py``). The layer provides it:
  a ``Cast`` to int64, what the removed helper emitted.

And one of mmdeploy's rewrites disagrees with mmdet 3.3: for Cascade Mask R-CNN it averages the
three stages' mask *logits*, where mmdet averages their *probabilities* (sigmoids), so the exported
masks differ from PyTorch's wherever the stages disagree. The layer swaps that rewrite, in
mmdeploy's rewriter registry, for one that averages probabilities as mmdet does.

:func:`mmdeploy_compat` applies all three on entry and restores ``torch.onnx`` exactly on exit, so
nothing outside the export sees them; site-packages are never edited.
"""
import functools
from contextlib import contextmanager
from typing import Iterator

import onnx
import torch
import torch.onnx
import torch.onnx.symbolic_opset9 as opset9

_MISSING = object()
CASCADE_PREDICT_MASK = 'mmdet.models.roi_heads.cascade_roi_head.CascadeRoIHead.predict_mask'


def _cast_long(g, input, non_blocking):
    """The removed ``symbolic_opset9._cast_Long``: cast to int64 (``non_blocking`` has no ONNX meaning)."""
    return g.op('Cast', input, to_i=onnx.TensorProto.INT64)


def cascade_predict_mask(self, x, batch_img_metas, results_list, rescale=False):
    """mmdeploy's ``cascade_roi_head__predict_mask``, averaging the stages' probabilities as mmdet 3.3 does.

    mmdeploy's ``FCNMaskHead.predict_by_feat`` rewrite applies the sigmoid itself, so it receives the
    logit of the mean probability, whose sigmoid is that mean."""
    dets, det_labels = results_list
    batch_size, num_det = dets.shape[:2]
    boxes = dets[..., :4]
    batch_index = torch.arange(batch_size, device=boxes.device).float().view(-1, 1, 1).expand(batch_size, num_det, 1)
    mask_rois = torch.cat([batch_index, boxes], dim=-1).view(-1, 5)
    probs = sum(self._mask_forward(i, x, mask_rois)['mask_preds'].sigmoid() for i in range(self.num_stages))
    probs = probs / self.num_stages
    logits = torch.log(probs) - torch.log(1 - probs)
    masks = self.mask_head[-1].predict_by_feat(logits, results_list, batch_img_metas, self.test_cfg, rescale=rescale)
    return dets, det_labels, masks.reshape(batch_size, num_det, masks.shape[-2], masks.shape[-1])


@contextmanager
def cascade_mask_rewrite() -> Iterator[None]:
    """mmdeploy's Cascade Mask R-CNN mask rewrite replaced by :func:`cascade_predict_mask`, inside only."""
    from mmdeploy.codebase import import_codebase
    from mmdeploy.core import FUNCTION_REWRITER
    from mmdeploy.utils import Codebase

    import_codebase(Codebase.MMDET)  # registers mmdeploy's mmdet rewrites
    records = FUNCTION_REWRITER._registry._rewrite_records
    if CASCADE_PREDICT_MASK not in records:
        raise RuntimeError(f'mmdeploy registers no rewrite of {CASCADE_PREDICT_MASK}: petah_mm\'s compatibility '
                           'layer is written for mmdeploy 1.3.1 (requirements/mmdeploy.txt)')
    original = records[CASCADE_PREDICT_MASK]
    records[CASCADE_PREDICT_MASK] = [dict(record, _object=cascade_predict_mask) for record in original]
    try:
        yield
    finally:
        records[CASCADE_PREDICT_MASK] = original


@contextmanager
def mmdeploy_compat() -> Iterator[None]:
    """``torch.onnx.export`` defaulting to the TorchScript exporter, ``_cast_Long`` present and mmdet's mask
    averaging, inside only."""
    export, cast_long = torch.onnx.export, getattr(opset9, '_cast_Long', _MISSING)

    @functools.wraps(export)
    def torchscript_export(*args, **kwargs):
        kwargs.setdefault('dynamo', False)
        return export(*args, **kwargs)

    torch.onnx.export = torchscript_export
    if cast_long is _MISSING:
        opset9._cast_Long = _cast_long
    try:
        with cascade_mask_rewrite():
            yield
    finally:
        torch.onnx.export = export
        if cast_long is _MISSING:
            del opset9._cast_Long
