# Cascade Mask R-CNN with a PETAH-2 EfficientFormer-L3.
_base_ = './cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint={{_base_.ef_checkpoints.l3}})),
    neck=dict(in_channels={{_base_.ef_channels.l3}}))
