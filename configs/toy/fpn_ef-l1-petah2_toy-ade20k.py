# Semantic FPN with a PETAH-2 EfficientFormer-L1 on the toy ADE20K set that
# `python tools/misc/make_toy_data.py ade20k data/toy_ade20k` writes. Only the data root, image
# size and schedule differ from the ADE20K config. The "pretrained" backbone is the seeded random
# EfficientFormer that `python tools/misc/make_toy_backbone.py` writes, shared by every toy task.
_base_ = '../sem_fpn/fpn_ef-l1-petah2_8xb4-40k_ade20k-512x512.py'

data_root = 'data/toy_ade20k'
crop_size = (128, 128)  # mmseg's own name, which its ADE20K config defines too
model = dict(backbone=dict(init_cfg=dict(checkpoint='data/toy_backbone/efficientformer-l1_seed0.pth')),
             data_preprocessor=dict(size=crop_size))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(192, 160), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(192, 160), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=200, by_epoch=False)]
train_cfg = dict(max_iters=200, val_interval=200)
# --show-dir draws every test image (the library's default, every 50th, would skip all 8)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=200, max_keep_ckpts=1),
                     visualization=dict(interval=1))
# The same metrics on every run on one machine: seeded, and deterministic algorithms only
randomness = dict(seed=0, deterministic=True)
