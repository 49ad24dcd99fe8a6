"""One representative of each supported backbone family, built with an adapter: what the parameter tables
(``count_params.py --families``) and the export check (``python -m petah_mm.deploy.onnx.families``) go over.

Dense outputs, random init: nothing is downloaded.
"""
from mmengine.registry import MODELS, DefaultScope

TIMM = dict(type='mmpretrain.TIMMBackbone', features_only=True, pretrained=False)
FAMILIES = {
    'EfficientFormer-L1 (petah_mm)': dict(type='PETAHEfficientFormer', arch='l1'),
    'EfficientFormerV2-S0 (timm)': dict(type='PETAHBackbone',
                                        backbone=dict(TIMM, model_name='efficientformerv2_s0')),
    'FastViT-SA12 (timm)': dict(type='PETAHBackbone', backbone=dict(TIMM, model_name='fastvit_sa12')),
    'MobileViT-S (mmpretrain)': dict(type='PETAHBackbone', backbone=dict(type='mmpretrain.MobileViT', arch='small')),
    'Swin-T (mmdet)': dict(type='PETAHBackbone', backbone=dict(type='mmdet.SwinTransformer')),
    'ResNet-50 (mmdet)': dict(type='PETAHBackbone', backbone=dict(type='mmdet.ResNet', depth=50)),
    # the real transformer (configs/real/_base_/dinov2-vit-s14.py) at the study's 112 px: 8x8 patches
    'ViT-S/14 DINOv2 (timm)': dict(type='PETAHBackbone',
                                   backbone=dict(TIMM, model_name='vit_small_patch14_dinov2', img_size=112)),
}


def build_backbone(backbone_cfg: dict, adapter: dict):
    """``backbone_cfg`` built with ``adapter`` (a preset's settings), in mmdet's scope (it sees every library's
    backbones through their scope prefixes)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(dict(backbone_cfg, adapter=adapter))
