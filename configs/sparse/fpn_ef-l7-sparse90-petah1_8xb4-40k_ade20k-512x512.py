# Semantic FPN, 90%-sparse EfficientFormer-L7: PETAH-1 (attention LoRA r8 + convolutional LoRA r1).
_base_ = './fpn_ef-l7-sparse90-petah2_8xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(method='petah', conv_rank=1)))
