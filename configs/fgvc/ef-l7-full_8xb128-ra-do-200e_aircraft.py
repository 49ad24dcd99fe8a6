# FGVC-Aircraft, EfficientFormer-L7, full fine-tuning + RandAugment + dropout 0.1 before the head (Table 4).
_base_ = './ef-l7-full_8xb128-ra-200e_aircraft.py'

model = dict(head=dict(type='DropoutLinearClsHead', dropout_rate=0.1))
