from .fileio import atomic_write
from .norm import FrozenBatchNorm2d, convert_frozen_batchnorm, freeze_batchnorm_stats

__all__ = ['atomic_write', 'FrozenBatchNorm2d', 'convert_frozen_batchnorm', 'freeze_batchnorm_stats']
