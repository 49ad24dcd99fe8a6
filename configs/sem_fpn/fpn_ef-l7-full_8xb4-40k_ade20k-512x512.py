# Semantic FPN, EfficientFormer-L7: full fine-tuning of the backbone.
_base_ = './fpn_ef-l7-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='full')))
