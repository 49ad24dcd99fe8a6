# Cascade Mask R-CNN, DINOv2 ViT-S/14 + simple feature pyramid, animal silhouettes: full fine-tuning of the backbone,
# at 0.1x the LR of the neck and heads (as the classification configs).
_base_ = './cascade-mask-rcnn_dinov2-vit-s14-petah2_simple-fpn_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='full')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
