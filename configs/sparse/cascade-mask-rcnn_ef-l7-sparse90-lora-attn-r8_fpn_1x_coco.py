# Cascade Mask R-CNN, 90%-sparse EfficientFormer-L7: LoRA of rank 8 on the Meta3D attention linears (Sparse-LoRA).
_base_ = './cascade-mask-rcnn_ef-l7-sparse90-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
