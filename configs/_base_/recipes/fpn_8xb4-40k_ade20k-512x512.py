# The PETAH segmentation recipe (App. A.2) for any backbone: Semantic FPN on ADE20K (150 classes),
# 40k iterations of AdamW (lr 2e-4, wd 1e-4, poly decay), 4 images per GPU on 8 GPUs, evaluated at
# 2048x512. A config sets model.backbone and model.neck.in_channels.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)

model = dict(pretrained=None)  # mmseg would hand a model-level `pretrained` to the backbone; init_cfg loads it
optim_wrapper = dict(
    # petah_mm's constructor: frozen parameters stay out of the optimizer, one summary line in the log
    constructor='PETAHOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=4000))  # crash-safe saves (docs/security.md)
