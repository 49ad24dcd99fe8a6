# Semantic FPN with a PETAH-2 FastViT-SA12 (timm) on ADE20K: the PETAH segmentation recipe of the
# EfficientFormer configs. Other methods for FastViT-SA12 (timm) inherit from this file.
_base_ = [
    '../_base_/recipes/fpn_8xb4-40k_ade20k-512x512.py',
    '../_base_/models/fastvit-sa12.py',
]
__channels, __backbone = map(_base_.pop, ('fastvit_sa12_channels', 'fastvit_sa12_petah2'))

model = dict(
    backbone=dict(__backbone, _delete_=True),
    neck=dict(in_channels=__channels))
