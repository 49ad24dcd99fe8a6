"""Cascade (Mask) R-CNN to ONNX through mmdeploy 1.3.1: end2end, with NMS in the graph.

mmdeploy's rewriters turn mmdet's post-processing into ONNX ops (``NonMaxSuppression``, ``TopK``,
``RoiAlign``); :mod:`.mmdeploy_compat` makes it run on this torch. The deploy config is written
here in Python (mmdeploy's ``onnxruntime`` end2end detection / instance-segmentation configs, at
the graph's fixed size), so no mmdeploy checkout is needed. The detector is exported for batch 1
at a fixed H x W.

Outputs (mmdeploy's names): ``dets`` (1, K, 5) boxes x1, y1, x2, y2 and score, in input pixels;
``labels`` (1, K); with masks, ``masks`` (1, K, 28, 28) mask probabilities in each box.
"""
import tempfile
from pathlib import Path
from typing import Iterable, List, Tuple

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from ...utils import write_bytes_atomic
from .exported import OPSET, ExportedGraph, PathLike, Verification, merged
from .graphs import INPUT_NAME
from .inputs import pipeline_batches
from .mmdeploy_compat import mmdeploy_compat
from .runtime import cpu_session


def has_masks(cfg: Config) -> bool:
    return 'mask_head' in cfg.model.get('roi_head', {})


def deploy_config(cfg: Config, shape: Tuple[int, int]) -> Config:
    """mmdeploy's onnxruntime end2end config for this detector at ``shape`` (H, W), batch 1."""
    rcnn = cfg.model.test_cfg.rcnn
    masks = has_masks(cfg)
    return Config(dict(
        onnx_config=dict(type='onnx', export_params=True, keep_initializers_as_inputs=False, opset_version=OPSET,
                         save_file='end2end.onnx', input_names=[INPUT_NAME],
                         output_names=['dets', 'labels', *(['masks'] if masks else [])],
                         input_shape=[shape[1], shape[0]], optimize=False),
        codebase_config=dict(type='mmdet', task='InstanceSegmentation' if masks else 'ObjectDetection',
                             model_type='end2end', export_postprocess_mask=False,
                             post_processing=dict(score_threshold=rcnn.get('score_thr', 0.05),
                                                  confidence_threshold=0.005,
                                                  iou_threshold=rcnn.nms.get('iou_threshold', 0.5),
                                                  max_output_boxes_per_class=200, pre_top_k=5000,
                                                  keep_top_k=rcnn.get('max_per_img', 100), background_label_id=-1)),
        backend_config=dict(type='onnxruntime')))


def export_detector(model: nn.Module, cfg: Config, out_file: PathLike, shape: Tuple[int, int], force: bool = False,
                    inputs: Iterable[PathLike] = ()) -> ExportedGraph:
    """Write ``out_file``: the merged detector, end2end, exported by mmdeploy (batch 1, ``shape``)."""
    from mmdeploy.apis.onnx import export

    deploy_cfg = deploy_config(cfg, shape)
    onnx_cfg = deploy_cfg.onnx_config
    data = next(pipeline_batches(cfg, model, 'test', 1, shape))
    set_batch_shape(data['data_samples'], shape)
    with tempfile.TemporaryDirectory() as work, merged(model), mmdeploy_compat():
        export(model, data['inputs'], input_metas=dict(data_samples=data['data_samples'], mode='predict'),
               output_path_prefix=str(Path(work) / 'end2end'), backend='onnxruntime',
               input_names=onnx_cfg.input_names, output_names=onnx_cfg.output_names,
               context_info=dict(deploy_cfg=deploy_cfg), opset_version=OPSET, dynamic_axes=None,
               keep_initializers_as_inputs=False, optimize=False)
        write_bytes_atomic(out_file, (Path(work) / 'end2end.onnx').read_bytes(), force, inputs)
    return ExportedGraph(Path(out_file), 'detection', tuple(shape), INPUT_NAME, tuple(onnx_cfg.output_names),
                         dynamic_batch=False)


def set_batch_shape(data_samples, shape: Tuple[int, int]) -> None:
    """The padded batch size the samples' metas record: the graph's size."""
    for sample in data_samples:
        sample.set_metainfo(dict(batch_input_shape=tuple(shape), pad_shape=tuple(shape)))


#: --verify's detection criteria (issue 24): matched box IoU, score difference, mask IoU
BOX_IOU, SCORE_ATOL, MASK_IOU = 0.99, 1e-3, 0.98


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1, y1, x2, y2 boxes."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda boxes: np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-12)


def ort_masks(masks: np.ndarray, boxes: np.ndarray, img_shape: Tuple[int, int], threshold: float) -> torch.Tensor:
    """The graph's 28x28 box masks pasted into the image as mmdet pastes PyTorch's, then binarised."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    if not len(boxes):
        return torch.zeros(0, *img_shape, dtype=torch.bool)
    pasted, _ = _do_paste_mask(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), *img_shape,
                               skip_empty=False)
    return pasted >= threshold


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def match_detections(expected, dets: np.ndarray, labels: np.ndarray, masks, threshold: float,
                     mask_thr: float) -> Tuple[List[str], bool]:
    """Every PyTorch box scoring at least ``threshold`` must have an ORT box of its label with IoU >=
    BOX_IOU and a score within SCORE_ATOL (and a mask IoU >= MASK_IOU); returns report lines and the verdict."""
    boxes, scores = expected.bboxes.numpy(), expected.scores.numpy()
    keep = scores >= threshold
    iou = box_iou(boxes[keep], dets[:, :4]) if len(dets) else np.zeros((int(keep.sum()), 0))
    ok, worst_iou, worst_score, worst_mask = True, 1.0, 0.0, 1.0
    pairs = []
    for row, (label, score, index) in enumerate(zip(expected.labels.numpy()[keep], scores[keep],
                                                    np.flatnonzero(keep))):
        good = (iou[row] >= BOX_IOU) & (labels == label) & (np.abs(dets[:, 4] - score) <= SCORE_ATOL)
        if not good.any():
            ok = False
            worst_iou = min(worst_iou, float(iou[row].max(initial=0.0)))
            continue
        best = int(np.argmax(np.where(good, iou[row], -1)))
        worst_iou = min(worst_iou, float(iou[row, best]))
        worst_score = max(worst_score, float(abs(dets[best, 4] - score)))
        pairs.append((index, best))
    if masks is not None and pairs:
        torch_index, ort_index = map(list, zip(*pairs))
        pasted = ort_masks(masks[ort_index], dets[ort_index, :4], tuple(expected.masks.shape[-2:]), mask_thr)
        worst_mask = min(mask_iou(a, b.bool()) for a, b in zip(pasted, expected.masks[torch_index]))
    ok = ok and worst_mask >= MASK_IOU
    line = (f'{int(keep.sum())} PyTorch boxes scoring >= {threshold:g}, {len(dets)} ORT boxes; worst matched box '
            f'IoU {worst_iou:.4f} (>= {BOX_IOU}), worst score difference {worst_score:.2g} (<= {SCORE_ATOL:g})')
    if masks is not None:
        line += f', worst mask IoU {worst_mask:.4f} (>= {MASK_IOU})'
    return [line], ok


def verify_detector(model: nn.Module, cfg: Config, graph: ExportedGraph, num_images: int,
                    score_thr: float = None):
    """ORT's end2end detections against ``model.predict`` (adapters unmerged) on test images."""
    rcnn = cfg.model.test_cfg.rcnn
    threshold = rcnn.get('score_thr', 0.05) if score_thr is None else score_thr
    session, result = cpu_session(graph.path), Verification()
    for index, data in enumerate(pipeline_batches(cfg, model, 'test', num_images, graph.shape)):
        set_batch_shape(data['data_samples'], graph.shape)
        with torch.no_grad():
            expected = model.eval().predict(data['inputs'], data['data_samples'], rescale=False)[0].pred_instances
        outputs = session.run(None, {graph.input_name: data['inputs'].numpy()})
        masks = outputs[2][0] if len(outputs) > 2 else None
        lines, ok = match_detections(expected, outputs[0][0], outputs[1][0], masks, threshold,
                                     rcnn.get('mask_thr_binary', 0.5))
        result.add(f'image {index}: {lines[0]}', ok)
    return result
