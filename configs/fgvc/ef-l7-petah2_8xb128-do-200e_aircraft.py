# FGVC-Aircraft, EfficientFormer-L7, PETAH-2 + dropout 0.1 before the head (PETAH Table 4).
_base_ = './ef-l7-petah2_8xb128-200e_aircraft.py'

model = dict(head=dict(type='DropoutLinearClsHead', dropout_rate=0.1))
