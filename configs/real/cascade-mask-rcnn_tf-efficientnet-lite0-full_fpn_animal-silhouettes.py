# Cascade Mask R-CNN, real EfficientNet-Lite0, animal silhouettes: full fine-tuning of the backbone, at
# 0.1x the LR of the neck and heads (as the classification configs).
_base_ = './cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='full')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
