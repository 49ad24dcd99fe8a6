# Cascade Mask R-CNN, FastViT-SA12 (timm): LoRA of rank 8 on the attention projections.
_base_ = './cascade-mask-rcnn_fastvit-sa12-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
