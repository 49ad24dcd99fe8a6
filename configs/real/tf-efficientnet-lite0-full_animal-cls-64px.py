# Animal classification (64x64), EfficientNet-Lite0 with real ImageNet-1k weights, full fine-tuning: the
# backbone trains at 0.1x the head's LR.
_base_ = './tf-efficientnet-lite0-petah2_animal-cls-64px.py'

model = dict(backbone=dict(adapter=dict(method='full')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
