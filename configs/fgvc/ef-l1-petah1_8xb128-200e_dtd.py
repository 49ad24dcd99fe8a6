# DTD, EfficientFormer-L1: PETAH-1: attention LoRA r8 + convolutional LoRA r1.
_base_ = './ef-l1-petah2_8xb128-200e_dtd.py'

model = dict(backbone=dict(adapter=dict(method='petah', conv_rank=1)))
