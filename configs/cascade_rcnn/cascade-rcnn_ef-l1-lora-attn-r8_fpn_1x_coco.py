# Cascade R-CNN, EfficientFormer-L1: LoRA of rank 8 on the Meta3D attention linears.
_base_ = './cascade-rcnn_ef-l1-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
