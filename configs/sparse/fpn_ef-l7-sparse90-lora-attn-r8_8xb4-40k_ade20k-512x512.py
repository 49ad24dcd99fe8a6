# Semantic FPN, 90%-sparse EfficientFormer-L7: LoRA of rank 8 on the Meta3D attention linears (Sparse-LoRA).
_base_ = './fpn_ef-l7-sparse90-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
