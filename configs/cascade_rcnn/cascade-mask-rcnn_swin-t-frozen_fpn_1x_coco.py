# Cascade Mask R-CNN, Swin-T: frozen backbone: only the neck and heads train.
_base_ = './cascade-mask-rcnn_swin-t-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
