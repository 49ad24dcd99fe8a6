# Food-101, EfficientFormer-L7: LoRA of rank 8 on the Meta3D attention linears.
_base_ = './ef-l7-petah2_8xb128-100e_food101.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
