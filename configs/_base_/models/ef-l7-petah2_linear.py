# ImageClassifier with a PETAH-2 EfficientFormer-L7 and a linear head (PETAH Table 3): the trunk's
# final tokens after its pretrained LayerNorm, averaged, then one linear layer. The ImageNet-1k
# checkpoint's heads are not loaded; configs set head.num_classes for their dataset.
_base_ = './efficientformer.py'
custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PETAHEfficientFormer',
        arch='l7',
        out_indices=[3],
        reshape_last_feat=False,
        adapter=dict(method='petah', rank=8, conv_rank=2),
        init_cfg=dict(type='Pretrained', checkpoint=__checkpoints.l7)),
    neck=dict(type='GlobalAveragePooling', dim=1),
    head=dict(type='LinearClsHead', in_channels=__channels.l7[-1],
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
