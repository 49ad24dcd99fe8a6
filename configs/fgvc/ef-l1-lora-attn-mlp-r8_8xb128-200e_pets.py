# Oxford-IIIT Pets, EfficientFormer-L1: LoRA of rank 8 on the Meta3D attention and MLP linears.
_base_ = './ef-l1-petah2_8xb128-200e_pets.py'

model = dict(backbone=dict(adapter=dict(method='lora_attn_mlp', rank=8)))
