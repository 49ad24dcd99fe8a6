# Cascade Mask R-CNN, 90%-sparse EfficientFormer-L7, frozen: only the neck and heads train.
_base_ = './cascade-mask-rcnn_ef-l7-sparse90-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
