from .efficientformer import DenseEfficientFormer, ResizableAttentionWithBias
from .petah_backbone import (adapted_class, backbone_class, build_backbone_from_config, build_petah_backbone,
                             pretrained_checkpoint, with_pretrained, without_pretrained)
from .petah_efficientformer import PETAHEfficientFormer

__all__ = [
    'DenseEfficientFormer', 'PETAHEfficientFormer', 'ResizableAttentionWithBias', 'adapted_class', 'backbone_class',
    'build_backbone_from_config', 'build_petah_backbone', 'pretrained_checkpoint', 'with_pretrained',
    'without_pretrained'
]
