# FGVC-Aircraft, EfficientFormer-L1: full fine-tuning; the backbone trains at 0.1x the head's LR.
_base_ = './ef-l1-petah2_8xb128-200e_aircraft.py'

model = dict(backbone=dict(adapter=dict(method='full')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
