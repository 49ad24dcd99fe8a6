# Food-101, EfficientFormer-L3: PETAH-1: attention LoRA r8 + convolutional LoRA r1.
_base_ = './ef-l3-petah2_8xb128-100e_food101.py'

model = dict(backbone=dict(adapter=dict(method='petah', conv_rank=1)))
