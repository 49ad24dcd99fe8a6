# Cascade Mask R-CNN, 90%-sparse EfficientFormer-L7: PETAH-1 (attention LoRA r8 + convolutional LoRA r1).
_base_ = './cascade-mask-rcnn_ef-l7-sparse90-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='petah', conv_rank=1)))
