# Cascade Mask R-CNN, EfficientFormer-L7: fine-tuning of the Meta3D attention linears (qkv, proj) only.
_base_ = './cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='attn_ft')))
