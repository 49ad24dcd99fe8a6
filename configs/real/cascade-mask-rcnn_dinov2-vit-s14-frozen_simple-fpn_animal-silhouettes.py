# Cascade Mask R-CNN, DINOv2 ViT-S/14 + simple feature pyramid, animal silhouettes: frozen backbone: only the pyramid,
# neck and heads train.
_base_ = './cascade-mask-rcnn_dinov2-vit-s14-petah2_simple-fpn_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
