# Cascade R-CNN, EfficientFormer-L1: full fine-tuning of the backbone.
_base_ = './cascade-rcnn_ef-l1-petah2_fpn_1x_coco.py'

# BatchNorm statistics stay frozen (2 images per GPU are too few), as the method implies.
model = dict(backbone=dict(adapter=dict(method='full')))
