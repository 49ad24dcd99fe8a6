from .backbones import (DenseEfficientFormer, PETAHEfficientFormer, build_backbone_from_config, build_petah_backbone,
                        pretrained_checkpoint, with_pretrained, without_pretrained)
from .heads import DropoutLinearClsHead

__all__ = [
    'DenseEfficientFormer', 'DropoutLinearClsHead', 'PETAHEfficientFormer', 'build_backbone_from_config',
    'build_petah_backbone', 'pretrained_checkpoint', 'with_pretrained', 'without_pretrained'
]
