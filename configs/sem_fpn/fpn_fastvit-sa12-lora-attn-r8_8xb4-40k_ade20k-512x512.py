# Semantic FPN, FastViT-SA12 (timm): LoRA of rank 8 on the attention projections.
_base_ = './fpn_fastvit-sa12-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
