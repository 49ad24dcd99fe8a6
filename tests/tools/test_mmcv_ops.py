"""mmcv's compiled ops are present and correct (the sdist build applied the C++20 fix)."""
import torch
from mmcv.ops import RoIAlign, batched_nms, nms


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.], [0., 0., 10., 9.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [3, 2]  # box 3 suppresses 0 (IoU 0.9) and 1; box 2 overlaps nothing
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.95, 0.7]))


def test_batched_nms_does_not_suppress_across_classes():
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [0., 0., 10., 10.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 0, 1])
    _, keep = batched_nms(boxes, scores, idxs, dict(type='nms', iou_threshold=0.5))
    assert keep.tolist() == [0, 2]


def test_roi_align_averages_a_known_ramp():
    # feature value = x coordinate of the pixel centre; an aligned 1x1 bin over [2, 6] in x
    # samples the ramp at its centre, 4.0, whatever the y range.
    feat = torch.arange(8.).add(0.5).repeat(1, 1, 8, 1)
    rois = torch.tensor([[0., 2., 1., 6., 5.]])
    out = RoIAlign(output_size=1, spatial_scale=1.0, sampling_ratio=2, aligned=True)(feat, rois)
    torch.testing.assert_close(out, torch.full((1, 1, 1, 1), 4.0))
    out = RoIAlign(output_size=(1, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feat, rois)
    torch.testing.assert_close(out, torch.tensor([[[[3.0, 5.0]]]]))
