# Cascade Mask R-CNN, EfficientFormer-L7: frozen backbone: only the neck and heads train.
_base_ = './cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
