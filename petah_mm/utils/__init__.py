from .fileio import atomic_write
from .norm import freeze_batchnorm_stats

__all__ = ['atomic_write', 'freeze_batchnorm_stats']
