# The PETAH detection recipe (App. A.2) for any backbone: Cascade Mask R-CNN + FPN on COCO at 640x480,
# 12 epochs of AdamW (lr 1e-4, wd 0.05), 500-iteration linear warmup, LR steps at epochs 8 and 11,
# 2 images per GPU on 8 GPUs. A config sets model.backbone and model.neck.in_channels.
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)

__image_size = (640, 480)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=__image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=__image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    # petah_mm's constructor: frozen parameters stay out of the optimizer, one summary line in the log
    constructor='PETAHOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
# LinearLR warmup over 500 iterations and MultiStepLR at epochs 8 and 11 come from the 1x schedule.
auto_scale_lr = dict(base_batch_size=16)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))  # crash-safe saves (docs/security.md)
