# Cascade Mask R-CNN + FPN with a PETAH-2 EfficientNet-Lite0 (real ImageNet-1k weights) on the animal silhouettes
# that `python tools/misc/make_real_data.py coco data/animal_silhouettes` writes (petah_mm.datasets.
# make_animal_silhouettes: animal-mnist silhouettes pasted on scikit-image photo crops, 128x128, COCO polygons,
# ten COCO animal classes). Only the backbone, classes, data root and image size differ from the toy config,
# whose schedule and RoI budgets fit small CPU runs. Other methods inherit from this file.
_base_ = ['../toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py', './_base_/tf-efficientnet-lite0.py']
__real = _base_.pop('real')

data_root = 'data/animal_silhouettes/'
__metainfo = dict(classes=('bear', 'bird', 'cat', 'cow', 'dog', 'elephant', 'giraffe', 'horse', 'sheep', 'zebra'))
train_pipeline = [dict(t, scale=(128, 128)) if t.type == 'Resize' else t for t in _base_.train_pipeline]
test_pipeline = [dict(t, scale=(128, 128)) if t.type == 'Resize' else t for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=__metainfo, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=__metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# A light FPN (64 channels) and heads (256-wide box FCs, 64-channel mask convs): the standard 256-channel ones
# hold 53 M parameters (a 200 MB task package, where a released task is meant to ship in the repository) and
# spend most of a CPU step in the mask heads. RoI budgets for 128x128 images holding 1-3 animals.
__width = 64
model = dict(
    data_preprocessor=__real.mean_std,
    backbone=dict(__real.dense_backbone, _delete_=True),
    neck=dict(in_channels=__real.channels, out_channels=__width),
    rpn_head=dict(in_channels=__width, feat_channels=__width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=__width),
        bbox_head=[dict(head, num_classes=10, in_channels=__width, fc_out_channels=256)
                   for head in _base_.model.roi_head.bbox_head],
        mask_roi_extractor=dict(out_channels=__width),
        mask_head=dict(num_classes=10, in_channels=__width, conv_out_channels=__width)),
    train_cfg=dict(
        rpn_proposal=dict(max_per_img=100),
        rcnn=[dict(stage, sampler=dict(stage.sampler, num=32)) for stage in _base_.model.train_cfg.rcnn]),
    test_cfg=dict(rpn=dict(max_per_img=100), rcnn=dict(max_per_img=20)))

# The schedule of tools/main_job.py and the dense study (tools/analysis_tools/dense_study.py): 12 epochs of the
# 256 training images (768 iterations of 4), about 6 minutes on 2 quiet CPU cores; warm-up, then cosine decay.
train_cfg = dict(max_epochs=12, val_interval=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0, end=12, convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(interval=12))
