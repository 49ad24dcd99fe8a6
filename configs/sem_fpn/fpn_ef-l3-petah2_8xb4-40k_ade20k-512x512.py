# Semantic FPN with a PETAH-2 EfficientFormer-L3.
_base_ = './fpn_ef-l7-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint={{_base_.ef_checkpoints.l3}})),
    neck=dict(in_channels={{_base_.ef_channels.l3}}))
