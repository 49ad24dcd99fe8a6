# Cascade Mask R-CNN, real EfficientNet-Lite0, animal silhouettes: frozen backbone: only the neck and heads train.
_base_ = './cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
