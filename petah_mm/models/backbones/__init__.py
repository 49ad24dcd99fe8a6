from .efficientformer import DenseEfficientFormer, ResizableAttentionWithBias
from .petah_efficientformer import PETAHEfficientFormer

__all__ = ['DenseEfficientFormer', 'PETAHEfficientFormer', 'ResizableAttentionWithBias']
