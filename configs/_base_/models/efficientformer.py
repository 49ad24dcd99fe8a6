# EfficientFormer (v1) ImageNet-1k weights: the official checkpoints of mmpretrain's model zoo
# (configs/efficientformer/metafile.yml). petah_mm loads them into PETAHEfficientFormer.
#
# These are helpers, not settings. A config that lists this file in `_base_` takes all three out with
#   __checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))
# so that they stay out of its dumped config (mmengine keeps every top-level name, except `__` ones).
ef_checkpoints = dict(
    l1='https://download.openmmlab.com/mmclassification/v0/efficientformer/'
    'efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth',
    l3='https://download.openmmlab.com/mmclassification/v0/efficientformer/'
    'efficientformer-l3_3rdparty_in1k_20220915-466793d6.pth',
    l7='https://download.openmmlab.com/mmclassification/v0/efficientformer/'
    'efficientformer-l7_3rdparty_in1k_20220915-185e30af.pth')
# Channels of the four stages (strides 4, 8, 16, 32), which the necks take as in_channels.
ef_channels = dict(l1=[48, 96, 224, 448], l3=[64, 128, 320, 512], l7=[96, 192, 384, 768])
# The PETAH-2 EfficientFormer-L7 that the detection and segmentation configs start from.
petah_backbone = dict(
    type='PETAHEfficientFormer',
    arch='l7',
    out_indices=[0, 1, 2, 3],
    adapter=dict(method='petah', rank=8, conv_rank=2),
    init_cfg=dict(type='Pretrained', checkpoint=ef_checkpoints['l7']))
