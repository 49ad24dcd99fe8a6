# Semantic FPN with a PETAH-2 EfficientFormer-L1 on the toy ADE20K set that
# `python tools/misc/make_toy_data.py ade20k data/toy_ade20k` writes. Only the data root, image
# size and schedule differ from the ADE20K config. The "pretrained" backbone is the seeded random
# EfficientFormer that `python tools/misc/make_toy_backbone.py` writes, shared by every toy task.
_base_ = '../sem_fpn/fpn_ef-l1-petah2_8xb4-40k_ade20k-512x512.py'

data_root = 'data/toy_ade20k'
crop_size = (128, 128)
image_scale = (192, 160)
toy_backbone = 'data/toy_backbone/efficientformer-l1_seed0.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=toy_backbone)), data_preprocessor=dict(size=crop_size))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 200
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
