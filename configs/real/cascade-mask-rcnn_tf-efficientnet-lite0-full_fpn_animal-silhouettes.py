# Cascade Mask R-CNN, real EfficientNet-Lite0, animal silhouettes: full fine-tuning of the backbone.
_base_ = './cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='full')))
