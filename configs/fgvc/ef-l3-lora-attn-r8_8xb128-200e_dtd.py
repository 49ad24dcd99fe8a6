# DTD, EfficientFormer-L3: LoRA of rank 8 on the Meta3D attention linears.
_base_ = './ef-l3-petah2_8xb128-200e_dtd.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=8)))
