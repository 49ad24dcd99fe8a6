# Semantic FPN, FastViT-SA12 (timm): frozen backbone: only the neck and heads train.
_base_ = './fpn_fastvit-sa12-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
