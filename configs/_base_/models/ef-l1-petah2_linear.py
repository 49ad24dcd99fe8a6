# ImageClassifier with a PETAH-2 EfficientFormer-L1 and a linear head.
_base_ = './ef-l7-petah2_linear.py'

model = dict(
    backbone=dict(arch='l1', init_cfg=dict(checkpoint={{_base_.ef_checkpoints.l1}})),
    head=dict(in_channels=_base_.ef_channels.l1[-1]))
