# Cascade R-CNN, EfficientFormer-L1: PETAH-1: attention LoRA r8 + convolutional LoRA r1.
_base_ = './cascade-rcnn_ef-l1-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='petah', conv_rank=1)))
