from .backbones import DenseEfficientFormer, PETAHEfficientFormer

__all__ = ['DenseEfficientFormer', 'PETAHEfficientFormer']
