# ImageClassifier with a PETAH-2 EfficientFormer-L1 and a linear head.
_base_ = ['./ef-l7-petah2_linear.py', './efficientformer.py']
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(
    backbone=dict(arch='l1', init_cfg=dict(checkpoint=__checkpoints.l1)),
    head=dict(in_channels=__channels.l1[-1]))
