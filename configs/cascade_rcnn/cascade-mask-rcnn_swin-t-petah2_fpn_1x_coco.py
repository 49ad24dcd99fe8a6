# Cascade Mask R-CNN + FPN with a PETAH-2 Swin-T (mmdet) on COCO: the PETAH detection recipe of the
# EfficientFormer configs. Other methods for Swin-T (mmdet) inherit from this file.
_base_ = [
    '../_base_/recipes/cascade-mask-rcnn_fpn_1x_coco-640x480.py',
    '../_base_/models/swin-t.py',
]
__channels, __backbone = map(_base_.pop, ('swin_t_channels', 'swin_t_petah2'))

model = dict(
    backbone=dict(__backbone, _delete_=True),
    neck=dict(in_channels=__channels))
