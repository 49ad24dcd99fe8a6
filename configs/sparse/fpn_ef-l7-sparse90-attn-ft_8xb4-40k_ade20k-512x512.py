# Semantic FPN, 90%-sparse EfficientFormer-L7: fine-tuning of the non-zero Meta3D attention weights (qkv,
# proj); the hook keeps every pruned weight at exactly zero.
_base_ = './fpn_ef-l7-sparse90-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='attn_ft')))
custom_hooks = [dict(type='PreserveSparsityHook')]
