"""PETAH-2 training with one of the adapter engine's optimisations undone, for the ablation rows.

'batchnorm': frozen BatchNorms stay ``nn.BatchNorm2d`` (``F.batch_norm``, which keeps its input for backward);
'branch': LoRA runs as the paper's Eq. (2), op(x, W) + B(A(x)), instead of the low-rank kernels;
'fused': LoRA trains by autograd through op(x, W + ΔW) instead of the low-rank kernels.
The last two force one of the factorization's own forward forms (``Factorization.use_form``).
"""
from torch import nn

from petah_mm.adapters import adapted_layers
from petah_mm.utils import FrozenBatchNorm2d
from petah_mm.utils.modules import replace_module

ABLATIONS = {'petah2 (BatchNorm kept)': ('petah2', 'batchnorm'), 'petah2 (two-layer branch)': ('petah2', 'branch'),
             'petah2 (autograd through W + ΔW)': ('petah2', 'fused')}
CHOICES = ('none', *(ablation for _, ablation in ABLATIONS.values()))


def plain_batchnorms(module: nn.Module) -> None:
    """Put a plain ``nn.BatchNorm2d`` sharing its parameters and statistics where each frozen one is."""
    for name in [name for name, m in module.named_modules() if isinstance(m, FrozenBatchNorm2d)]:
        frozen = module.get_submodule(name)
        plain = nn.BatchNorm2d(frozen.num_features, frozen.eps, frozen.momentum, device='meta')
        plain.weight, plain.bias = frozen.weight, frozen.bias
        for buffer in ('running_mean', 'running_var', 'num_batches_tracked'):
            setattr(plain, buffer, getattr(frozen, buffer))
        plain.train(frozen.training)
        replace_module(module, name, plain)


def undo(backbone: nn.Module, ablation: str) -> None:
    """Switch one of the engine's optimisations off ('none': leave the backbone as built)."""
    if ablation == 'batchnorm':
        plain_batchnorms(backbone)
    elif ablation in ('branch', 'fused'):
        for layer in adapted_layers(backbone).values():
            layer.adapter.use_form(ablation)
