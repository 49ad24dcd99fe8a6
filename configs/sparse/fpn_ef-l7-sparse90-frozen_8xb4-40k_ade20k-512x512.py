# Semantic FPN, 90%-sparse EfficientFormer-L7, frozen: only the neck and heads train.
_base_ = './fpn_ef-l7-sparse90-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
