# Cascade Mask R-CNN + FPN with a PETAH-2 FastViT-SA12 (timm) on COCO: the PETAH detection recipe of the
# EfficientFormer configs. Other methods for FastViT-SA12 (timm) inherit from this file.
_base_ = [
    '../_base_/recipes/cascade-mask-rcnn_fpn_1x_coco-640x480.py',
    '../_base_/models/fastvit-sa12.py',
]
__channels, __backbone = map(_base_.pop, ('fastvit_sa12_channels', 'fastvit_sa12_petah2'))

model = dict(
    backbone=dict(__backbone, _delete_=True),
    neck=dict(in_channels=__channels))
