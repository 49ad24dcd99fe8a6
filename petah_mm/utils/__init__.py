from .fileio import atomic_write, check_output_path, save_torch_atomic, torch_bytes, write_bytes_atomic
from .norm import FrozenBatchNorm2d, NormEvalMixin, convert_frozen_batchnorm, freeze_batchnorm_stats

__all__ = [
    'atomic_write', 'check_output_path', 'save_torch_atomic', 'torch_bytes', 'write_bytes_atomic',
    'FrozenBatchNorm2d', 'NormEvalMixin', 'convert_frozen_batchnorm', 'freeze_batchnorm_stats'
]
