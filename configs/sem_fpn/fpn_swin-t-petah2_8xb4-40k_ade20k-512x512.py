# Semantic FPN with a PETAH-2 Swin-T (mmdet) on ADE20K: the PETAH segmentation recipe of the
# EfficientFormer configs. Other methods for Swin-T (mmdet) inherit from this file.
_base_ = [
    '../_base_/recipes/fpn_8xb4-40k_ade20k-512x512.py',
    '../_base_/models/swin-t.py',
]

model = dict(
    backbone=dict(_base_.swin_t_petah2, _delete_=True),
    neck=dict(in_channels=_base_.swin_t_channels))
