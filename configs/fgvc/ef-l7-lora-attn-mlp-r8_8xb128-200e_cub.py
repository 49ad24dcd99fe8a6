# CUB-200-2011, EfficientFormer-L7: LoRA of rank 8 on the Meta3D attention and MLP linears.
_base_ = './ef-l7-petah2_8xb128-200e_cub.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn_mlp', rank=8)))
