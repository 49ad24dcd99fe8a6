# Semantic FPN, EfficientFormer-L3: fine-tuning of the Meta3D attention linears (qkv, proj) only.
_base_ = './fpn_ef-l3-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='attn_ft')))
