# PETAH-2 EfficientFormer-L1 with a linear head on the toy classification set that
# `python tools/misc/make_toy_data.py cls data/toy_cls` writes (4 classes of coloured shapes, 64x64).
# Only the data (CustomDataset folders, 4 classes), image size and schedule differ from the DTD
# config. The "pretrained" backbone is the seeded random EfficientFormer that
# `python tools/misc/make_toy_backbone.py` writes, shared by every toy task (nothing can be
# downloaded here).
_base_ = '../fgvc/ef-l1-petah2_8xb128-200e_dtd.py'

data_root = 'data/toy_cls'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=72, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

data_preprocessor = dict(num_classes=4)
model = dict(backbone=dict(init_cfg=dict(checkpoint='data/toy_backbone/efficientformer-l1_seed0.pth')),
             head=dict(num_classes=4))

param_scheduler = [  # one warmup epoch instead of two, so that 2-epoch test runs have a cosine phase
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=8, val_interval=8)
# the inferencer and --show-dir draw every image (the library's default is every 5000th)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2),
                     visualization=dict(interval=1))
# The same metrics on every run on one machine: seeded, and deterministic algorithms only
randomness = dict(seed=0, deterministic=True)
