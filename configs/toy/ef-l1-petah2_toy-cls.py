# PETAH-2 EfficientFormer-L1 with a linear head on the toy classification set that
# `python tools/misc/make_toy_data.py cls data/toy_cls` writes (4 classes of coloured shapes, 64x64).
# Only the data (CustomDataset folders, 4 classes), image size and schedule differ from the DTD
# config. The "pretrained" backbone is the seeded random EfficientFormer that
# `python tools/misc/make_toy_backbone.py` writes, shared by every toy task (nothing can be
# downloaded here).
_base_ = '../fgvc/ef-l1-petah2_8xb128-200e_dtd.py'

data_root = 'data/toy_cls'
toy_backbone = 'data/toy_backbone/efficientformer-l1_seed0.pth'
num_classes = 4
image_size = 64

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=image_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=72, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
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

data_preprocessor = dict(num_classes=num_classes)
model = dict(backbone=dict(init_cfg=dict(checkpoint=toy_backbone)), head=dict(num_classes=num_classes))

max_epochs = 8
param_scheduler = [  # one warmup epoch instead of two, so that 2-epoch test runs have a cosine phase
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2))
