"""Cascade Mask R-CNN to ONNX through mmdeploy: the compatibility layer changes torch.onnx and mmdeploy only
inside the export, and the end2end graph's detections match PyTorch's."""
import numpy as np
import pytest
import torch
import torch.onnx
import torch.onnx.symbolic_opset9 as opset9

from petah_mm.deploy import build_trained_model
from petah_mm.deploy.onnx import export_onnx, verify_export
from petah_mm.deploy.onnx.detection import match_detections
from petah_mm.deploy.onnx.mmdeploy_compat import CASCADE_PREDICT_MASK, mmdeploy_compat
from helpers.onnx_models import random_task_checkpoint


def test_compat_layer_is_undone_on_exit():
    from mmdeploy.core import FUNCTION_REWRITER
    records = FUNCTION_REWRITER._registry._rewrite_records
    export, had_cast = torch.onnx.export, hasattr(opset9, '_cast_Long')
    with pytest.raises(RuntimeError, match='inside'):
        with mmdeploy_compat():
            assert torch.onnx.export is not export and hasattr(opset9, '_cast_Long')
            assert records[CASCADE_PREDICT_MASK][0]['_object'].__module__.startswith('petah_mm')
            raise RuntimeError('inside')
    assert torch.onnx.export is export and hasattr(opset9, '_cast_Long') == had_cast
    assert records[CASCADE_PREDICT_MASK][0]['_object'].__module__.startswith('mmdeploy')


def test_match_detections_fails_on_a_moved_box():
    from mmengine.structures import InstanceData
    expected = InstanceData(bboxes=torch.tensor([[10., 10., 50., 50.]]), scores=torch.tensor([0.9]),
                            labels=torch.tensor([3]))
    dets = np.array([[10., 10., 50., 50., 0.9]], dtype=np.float32)
    assert match_detections(expected, dets, np.array([3]), None, 0.05, 0.5)[1]
    moved = dets + np.array([1., 0, 1, 0, 0], dtype=np.float32)  # IoU 0.95
    lines, ok = match_detections(expected, moved, np.array([3]), None, 0.05, 0.5)
    assert not ok and 'IoU 0.95' in lines[0], lines
    assert not match_detections(expected, dets, np.array([2]), None, 0.05, 0.5)[1], 'another label matched'


@pytest.mark.slow
def test_cascade_mask_rcnn_end2end_matches_pytorch(toy_config, tmp_path):
    cfg, model, _ = build_trained_model(*random_task_checkpoint(toy_config, 'det', tmp_path))
    export = torch.onnx.export
    graph = export_onnx(model, cfg, tmp_path / 'det.onnx')
    assert torch.onnx.export is export and not model.backbone.is_merged
    assert graph.output_names == ('dets', 'labels', 'masks') and not graph.dynamic_batch
    result = verify_export(model, cfg, graph, num_images=2)
    assert result.ok and '12 PyTorch boxes' in result.report(), result.report()
