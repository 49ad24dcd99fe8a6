# Semantic FPN with a PETAH-2 EfficientNet-Lite0 (real ImageNet-1k weights) on the semantic maps of the animal
# silhouettes (`python tools/misc/make_real_data.py coco data/animal_silhouettes` writes them beside the COCO
# files: 0 background, k + 1 for the k-th animal). Only the backbone, classes and data differ from the toy config.
# Other methods inherit from this file.
_base_ = ['../toy/fpn_ef-l1-petah2_toy-ade20k.py', './_base_/tf-efficientnet-lite0.py']
__real = _base_.pop('real')

data_root = 'data/animal_silhouettes'
__classes = ('background', 'bear', 'bird', 'cat', 'cow', 'dog', 'elephant', 'giraffe', 'horse', 'sheep', 'zebra')
# A light FPN (64 channels, as the Cascade Mask R-CNN config's) keeps the released task package small
__width = 64
model = dict(
    data_preprocessor=__real.mean_std,
    backbone=dict(__real.dense_backbone, _delete_=True),
    neck=dict(in_channels=__real.channels, out_channels=__width),
    decode_head=dict(in_channels=[__width] * 4, channels=__width, num_classes=len(__classes)))

train_pipeline = [dict(t, reduce_zero_label=False) if t.type == 'LoadAnnotations' else t
                  for t in _base_.train_pipeline]
test_pipeline = [dict(t, reduce_zero_label=False) if t.type == 'LoadAnnotations' else t for t in _base_.test_pipeline]
__dataset = dict(_delete_=True, type='BaseSegDataset', data_root=data_root, metainfo=dict(classes=__classes),
                 img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False)
train_dataloader = dict(dataset=dict(
    __dataset, data_prefix=dict(img_path='train2017', seg_map_path='semantic/train2017'), pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    __dataset, data_prefix=dict(img_path='val2017', seg_map_path='semantic/val2017'), pipeline=test_pipeline))
test_dataloader = val_dataloader

# The schedule of the dense study (tools/analysis_tools/dense_study.py): 1,600 iterations of 4 images (25 epochs of
# the 256 training images), about 4 minutes on 2 quiet CPU cores. The ADE20K recipe's LR (2e-4) is for 40k
# iterations; at 800 iterations of it the heads had learned nothing but background, so the LR is 10x.
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=1600, by_epoch=False)]
train_cfg = dict(max_iters=1600, val_interval=1600)
default_hooks = dict(checkpoint=dict(interval=1600))
