# ImageClassifier with a PETAH-2 EfficientFormer-L3 and a linear head.
_base_ = ['./ef-l7-petah2_linear.py', './efficientformer.py']
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint=__checkpoints.l3)),
    head=dict(in_channels=__channels.l3[-1]))
