"""Sparse backbones (PETAH Sec. 5.1): magnitude pruning, mask-preserving fine-tuning, compact storage.

Importing this package registers :class:`PreserveSparsityHook` in mmengine's root ``HOOKS``.
"""
from .hooks import PreserveSparsityHook
from .pruning import (SCOPES, apply_masks, magnitude_masks, magnitude_threshold, prunable_weights, prune_,
                      sparsity_by_kind, weight_kinds)
from .storage import SparseFileError, read_checkpoint, read_packed, write_checkpoint, write_packed

__all__ = [
    'PreserveSparsityHook', 'SCOPES', 'apply_masks', 'magnitude_masks', 'magnitude_threshold', 'prunable_weights',
    'prune_', 'sparsity_by_kind', 'weight_kinds', 'SparseFileError', 'read_checkpoint', 'read_packed',
    'write_checkpoint', 'write_packed'
]
