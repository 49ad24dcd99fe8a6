# FGVC-Aircraft, EfficientFormer-L3: attention fine-tuning (Meta3D qkv, proj) at 0.1x the head's LR.
_base_ = './ef-l3-petah2_8xb128-200e_aircraft.py'

model = dict(backbone=dict(adapter=dict(method='attn_ft')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
