# Cascade Mask R-CNN, EfficientFormer-L1: full fine-tuning of the backbone.
_base_ = './cascade-mask-rcnn_ef-l1-petah2_fpn_1x_coco.py'

# 2 images per GPU are too few for BatchNorm statistics: keep them frozen, as mmdet does.
model = dict(backbone=dict(adapter=dict(method='full'), norm_eval=True))
