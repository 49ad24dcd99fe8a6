from .fileio import atomic_write
from .norm import FrozenBatchNorm2d, NormEvalMixin, convert_frozen_batchnorm, freeze_batchnorm_stats

__all__ = ['atomic_write', 'FrozenBatchNorm2d', 'NormEvalMixin', 'convert_frozen_batchnorm', 'freeze_batchnorm_stats']
