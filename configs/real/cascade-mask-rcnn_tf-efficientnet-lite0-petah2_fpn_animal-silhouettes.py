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

model = dict(
    data_preprocessor=__real.mean_std,
    backbone=dict(__real.dense_backbone, _delete_=True),
    neck=dict(in_channels=__real.channels),
    roi_head=dict(
        bbox_head=[dict(head, num_classes=10) for head in _base_.model.roi_head.bbox_head],
        mask_head=dict(num_classes=10)))
