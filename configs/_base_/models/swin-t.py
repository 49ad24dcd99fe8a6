# PETAH-2 on mmdet's SwinTransformer, Swin-T, with the ImageNet-1k weights published by the Swin authors. The
# adapter targets are discovered (the build log lists them): LoRA r=8 on the window-attention qkv/proj, conv LoRA
# r=2 on the patch embedding.
swin_t_petah2 = dict(
    type='PETAHBackbone',
    adapter=dict(method='petah', rank=8, conv_rank=2),
    backbone=dict(
        type='mmdet.SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        convert_weights=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
            'swin_tiny_patch4_window7_224.pth')))
swin_t_channels = [96, 192, 384, 768]
