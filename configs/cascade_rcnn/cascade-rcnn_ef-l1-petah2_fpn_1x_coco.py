# Cascade R-CNN with a PETAH-2 EfficientFormer-L1.
_base_ = ['./cascade-rcnn_ef-l7-petah2_fpn_1x_coco.py', '../_base_/models/efficientformer.py']
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(
    backbone=dict(arch='l1', init_cfg=dict(checkpoint=__checkpoints.l1)),
    neck=dict(in_channels=__channels.l1))
