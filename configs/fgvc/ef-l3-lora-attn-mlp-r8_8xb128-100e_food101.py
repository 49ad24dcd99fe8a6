# Food-101, EfficientFormer-L3: LoRA of rank 8 on the Meta3D attention and MLP linears.
_base_ = './ef-l3-petah2_8xb128-100e_food101.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn_mlp', rank=8)))
