# Semantic FPN, EfficientFormer-L7: fine-tuning of the Meta3D attention linears (qkv, proj) only.
_base_ = './fpn_ef-l7-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='attn_ft')))
