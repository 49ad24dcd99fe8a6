"""PETAH-2 training with one optimisation of the adapter engine or the backbone undone, for the ablation rows.

'batchnorm': frozen BatchNorms stay ``nn.BatchNorm2d`` (``F.batch_norm``, which keeps its input for backward);
'branch': LoRA runs as the paper's Eq. (2), op(x, W) + B(A(x)), instead of the low-rank kernels;
'fused': LoRA trains by autograd through op(x, W + ΔW) instead of the low-rank kernels;
'mlp': EfficientFormer's ConvMlps train layer by layer instead of as one function (``LowRankConvMlp``);
'pooling': EfficientFormer's pooling token mixers run mmpretrain's ``AvgPool2d`` instead of the box filter
(``BoxPooling``, a backbone optimisation every method gets, the peer row included; also inference rows of the
plain backbone and of PETAH-2 merged and unmerged). CPU only (CUDA keeps ``AvgPool2d``), and only for a backbone
that has such token mixers: the EfficientFormer trunk by default.
'branch' and 'fused' force one of the factorization's own forward forms (``Factorization.use_form``).
'peft' (``--peft``, the peer row): no petah_mm engine at all, peft 0.21's LoRA on the same targets, ranks
and alphas, injected into the same backbone with plain layers and plain BatchNorms (:func:`peft_lora`).
"""
import os
import sys
from pathlib import Path

from mmpretrain.models.backbones.efficientformer import Pooling
from torch import nn

from petah_mm.adapters import adapted_layers
from petah_mm.adapters.conv_mlp import LowRankConvMlp
from petah_mm.adapters.form_choice import cache_dir
from petah_mm.models.backbones.box_pooling import BoxPooling
from petah_mm.utils import FrozenBatchNorm2d
from petah_mm.utils.modules import replace_module

ABLATIONS = {'petah2 (BatchNorm kept)': ('petah2', 'batchnorm'), 'petah2 (two-layer branch)': ('petah2', 'branch'),
             'petah2 (autograd through W + ΔW)': ('petah2', 'fused'), 'petah2 (MLP layer by layer)': ('petah2', 'mlp'),
             'petah2 (AvgPool2d token mixer)': ('petah2', 'pooling')}
#: the optimisations ``--ablations`` can undo
ABLATION_NAMES = tuple(ablation for _, ablation in ABLATIONS.values())
#: the peer row of ``--peft``
PEFT_ROW = {'peft lora (petah2 targets)': ('petah2', 'peft')}
CHOICES = ('none', *ABLATION_NAMES, 'peft')


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


def avgpool_token_mixers(module: nn.Module) -> int:
    """Put mmpretrain's ``Pooling`` (``AvgPool2d``) where each box-filter token mixer is; returns how many."""
    names = [name for name, m in module.named_modules() if isinstance(m, BoxPooling)]
    for name in names:
        box = module.get_submodule(name)
        replace_module(module, name, Pooling(box.pool.kernel_size).train(box.training))
    return len(names)


def peft_dir() -> Path:
    """Where tools/install.sh installs peft 0.21 (outside .venv: its transformers breaks mmpretrain's import)."""
    return Path(os.environ.get('PETAH_MM_PEFT_DIR', cache_dir() / 'peft-0.21'))


def plain_layer(layer: nn.Module) -> nn.Module:
    """The frozen nn.Linear / nn.Conv2d under an adapted layer, sharing its weight and bias."""
    if isinstance(layer, nn.Linear):
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device='meta')
    else:
        plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, device='meta')
    plain.weight, plain.bias = layer.weight, layer.bias
    return plain


def peft_lora(backbone: nn.Module) -> None:
    """Replace petah_mm's LoRA by peft 0.21's on the same layers, ranks and alphas, in plain layers and
    BatchNorms: what a user of peft would train. peft's LoRA factors alone train (petah2 also trains its
    output norms, 0.3 % of its parameters)."""
    if not (peft_dir() / 'peft').is_dir():
        raise FileNotFoundError(f'--peft: peft 0.21 is not installed in {peft_dir()} (tools/install.sh installs it '
                                'there, or set PETAH_MM_PEFT_DIR)')
    sys.path.insert(0, str(peft_dir()))  # after petah_mm's imports: peft's transformers breaks mmpretrain's
    import peft
    layers = adapted_layers(backbone)
    if any(type(layer.adapter).__name__ != 'LoRA' for layer in layers.values()):
        raise ValueError('--peft compares with petah2, whose adapters are LoRA')
    for name, layer in layers.items():
        replace_module(backbone, name, plain_layer(layer))
    plain_batchnorms(backbone)
    config = peft.LoraConfig(r=8, lora_alpha=8, lora_dropout=0., target_modules=list(layers),
                             rank_pattern={name: layer.adapter.rank for name, layer in layers.items()},
                             alpha_pattern={name: layer.adapter.alpha for name, layer in layers.items()})
    peft.inject_adapter_in_model(config, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_('lora_' in name)


def undo(backbone: nn.Module, ablation: str) -> None:
    """Switch one of the engine's optimisations off ('none': leave the backbone as built)."""
    if ablation == 'batchnorm':
        plain_batchnorms(backbone)
    elif ablation == 'peft':
        peft_lora(backbone)
    elif ablation == 'pooling' and not avgpool_token_mixers(backbone):
        raise ValueError(f'--ablations pooling: {type(backbone).__name__} has no pooling token mixer run as a box '
                         'filter (EfficientFormer, PoolFormer); leave pooling out of --ablations')
    elif ablation == 'mlp':
        for mlp in backbone.modules():
            if isinstance(mlp, LowRankConvMlp):
                mlp.fuse_training = False
    elif ablation in ('branch', 'fused'):
        for layer in adapted_layers(backbone).values():
            layer.adapter.use_form(ablation)
