# Cascade Mask R-CNN, Swin-T: LoRA of rank 8 on the attention projections.
_base_ = './cascade-mask-rcnn_swin-t-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
