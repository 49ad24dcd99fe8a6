# Semantic FPN, FastViT-SA12 (timm): full fine-tuning of the backbone;
# normalisation statistics stay frozen, as the method implies.
_base_ = './fpn_fastvit-sa12-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='full')))
