# Semantic FPN with a PETAH-2 EfficientFormer-L7 on ADE20K (150 classes), PETAH App. A.2:
# 40k iterations of AdamW (lr 2e-4, wd 1e-4, poly decay), 4 images per GPU on 8 GPUs,
# evaluated at 2048x512. Other methods and sizes inherit from this file.
_base_ = [
    'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
    '../_base_/models/efficientformer.py',
]
custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(
    pretrained=None,  # mmseg would hand a model-level `pretrained` to the backbone; init_cfg loads it
    backbone=dict(__backbone, _delete_=True),
    neck=dict(in_channels=__channels.l7))

optim_wrapper = dict(
    # petah_mm's constructor: frozen parameters stay out of the optimizer, one summary line in the log
    constructor='PETAHOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=4000))  # crash-safe saves (docs/security.md)
