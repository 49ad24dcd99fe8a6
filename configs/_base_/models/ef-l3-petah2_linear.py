# ImageClassifier with a PETAH-2 EfficientFormer-L3 and a linear head.
_base_ = './ef-l7-petah2_linear.py'

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint={{_base_.ef_checkpoints.l3}})),
    head=dict(in_channels=_base_.ef_channels.l3[-1]))
