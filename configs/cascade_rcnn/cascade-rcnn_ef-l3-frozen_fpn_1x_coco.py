# Cascade R-CNN, EfficientFormer-L3: frozen backbone: only the neck and heads train.
_base_ = './cascade-rcnn_ef-l3-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
