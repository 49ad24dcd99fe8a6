# Oxford-IIIT Pets, EfficientFormer-L7: LoRA of rank 16 on the Meta3D attention linears.
_base_ = './ef-l7-petah2_8xb128-200e_pets.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn', rank=16)))
