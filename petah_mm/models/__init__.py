from .backbones import DenseEfficientFormer, PETAHEfficientFormer
from .heads import DropoutLinearClsHead

__all__ = ['DenseEfficientFormer', 'DropoutLinearClsHead', 'PETAHEfficientFormer']
