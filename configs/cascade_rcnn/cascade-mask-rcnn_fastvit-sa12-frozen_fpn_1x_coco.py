# Cascade Mask R-CNN, FastViT-SA12 (timm): frozen backbone: only the neck and heads train.
_base_ = './cascade-mask-rcnn_fastvit-sa12-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
