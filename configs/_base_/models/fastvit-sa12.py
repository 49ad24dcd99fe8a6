# PETAH-2 on FastViT-SA12 (Apple, ICCV 2023) from timm through mmpretrain's TIMMBackbone: RepMixer stages, then
# attention in the last stage, which has no position-bias table and so runs at any input size. pretrained=True
# loads timm's ImageNet-1k weights `timm/fastvit_sa12.apple_in1k` (https://huggingface.co/timm/fastvit_sa12.apple_in1k,
# converted from Apple's release) when the model is built, before the adapters are zeroed.
fastvit_sa12_petah2 = dict(
    type='PETAHBackbone',
    adapter=dict(method='petah', rank=8, conv_rank=2),
    backbone=dict(
        type='mmpretrain.TIMMBackbone',
        model_name='fastvit_sa12',
        features_only=True,
        pretrained=True,
        out_indices=(0, 1, 2, 3)))
fastvit_sa12_channels = [64, 128, 256, 512]
