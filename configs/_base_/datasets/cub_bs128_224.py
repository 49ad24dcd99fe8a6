# CUB-200-2011 at 224x224 with 128 images per GPU (PETAH Table 7): mmpretrain's CUB loaders with
# EfficientFormer's own ImageNet pre-processing instead of the 448-pixel one. Training sees only a
# random resized crop and a horizontal flip (App. A.1); testing a centre crop of the short side
# resized to 248. The other fine-grained datasets inherit these pipelines and change the dataset.
_base_ = 'mmpretrain::_base_/datasets/cub_bs8_448.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, num_workers=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, num_workers=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
