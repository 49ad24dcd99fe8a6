# CUB-200-2011, EfficientFormer-L1: LoRA of rank 16 on the Meta3D attention linears.
_base_ = './ef-l1-petah2_8xb128-200e_cub.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=16)))
