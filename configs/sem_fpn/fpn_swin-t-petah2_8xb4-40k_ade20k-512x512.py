# Semantic FPN with a PETAH-2 Swin-T (mmdet) on ADE20K: the PETAH segmentation recipe of the
# EfficientFormer configs. Other methods for Swin-T (mmdet) inherit from this file.
_base_ = [
    '../_base_/recipes/fpn_8xb4-40k_ade20k-512x512.py',
    '../_base_/models/swin-t.py',
]
__channels, __backbone = map(_base_.pop, ('swin_t_channels', 'swin_t_petah2'))

model = dict(
    backbone=dict(__backbone, _delete_=True),
    neck=dict(in_channels=__channels))
