"""Unstructured magnitude pruning of the conv and linear weights of a backbone.

This is the stand-in for Spartan (Tai et al. 2022), which PETAH uses to pre-train its 90%-sparse
backbones: Spartan *learns* the mask during (pre-)training, whereas magnitude pruning removes the
smallest weights of an already trained model in one shot. Both produce the same artefact, a
backbone whose pruned weights are exact zeros, so the mask is always ``weight != 0`` and nothing
downstream (fine-tuning, adapters, compact storage) needs to know which method made it.

Only ``nn.Conv2d`` / ``nn.Linear`` weights are pruned; biases, norms, layer scales and attention
biases are a fraction of a percent of the parameters and stay dense.
"""
import re
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

SCOPES = ('global', 'layer')


def prunable_weights(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{'<module>.weight': weight}`` of every Conv2d and Linear (adapted layers included, adapter factors not)."""
    return {f'{name}.weight': module.weight for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))}


def magnitude_threshold(magnitudes: torch.Tensor, sparsity: float) -> float:
    """The largest magnitude to prune: at least ``round(sparsity * n)`` entries are <= it."""
    k = round(sparsity * magnitudes.numel())
    return magnitudes.reshape(-1).kthvalue(k).values.item() if k else float('-inf')


def magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float, scope: str) -> Dict[str, torch.Tensor]:
    """Keep-masks (``True`` = kept) that remove the ``sparsity`` fraction of smallest ``|w|``.

    ``layer`` prunes every tensor to the same sparsity. ``global`` ranks all weights together,
    so layers with small weights lose more, down to all of them (on EfficientFormer's default
    random init it empties the wide-fan-in MLP convs of stage 3). Entries tied with the
    threshold are all pruned, so the achieved sparsity can exceed the target (e.g. re-pruning
    an already sparse model to a lower target keeps all its zeros).
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f'sparsity must lie in [0, 1), got {sparsity!r}')
    if scope not in SCOPES:
        raise ValueError(f'unknown pruning scope {scope!r}; choose one of {", ".join(SCOPES)}')
    if not weights:
        raise ValueError('no weights to prune')
    magnitudes = {name: w.detach().abs() for name, w in weights.items()}
    if scope == 'layer':
        return {name: m > magnitude_threshold(m, sparsity) for name, m in magnitudes.items()}
    threshold = magnitude_threshold(torch.cat([m.reshape(-1) for m in magnitudes.values()]), sparsity)
    return {name: m > threshold for name, m in magnitudes.items()}


@torch.no_grad()
def apply_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Set the pruned entries to +0.0 in place (``masked_fill``, never ``w * mask``, which gives -0.0)."""
    for name, weight in weights.items():
        weight.masked_fill_(~masks[name], 0.)


def prune_(model: nn.Module, sparsity: float, scope: str) -> Dict[str, nn.Parameter]:
    """Magnitude-prune every conv/linear weight of ``model`` in place; returns those weights."""
    weights = prunable_weights(model)
    apply_masks(weights, magnitude_masks(weights, sparsity, scope))
    return weights


def weight_kinds(backbone: nn.Module) -> Dict[str, str]:
    """Weight name -> its row in the sparsity report: ``KxK convs``, ``attention linears``, ``MLP linears``
    or ``other linears``.

    Linears are told apart by the backbone's own target groups (declared or discovered), the same
    patterns that decide where attention and MLP adapters go.
    """
    groups = {'attention linears': backbone.target_patterns.get('attn', []),
              'MLP linears': backbone.target_patterns.get('mlp', [])}
    kinds = {}
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            kinds[f'{name}.weight'] = '{}x{} convs'.format(*module.kernel_size)
        elif isinstance(module, nn.Linear):
            matches = [kind for kind, patterns in groups.items() if any(re.fullmatch(p, name) for p in patterns)]
            if len(matches) > 1:
                raise ValueError(f'linear layer {name!r} of {type(backbone).__name__} is in both target groups '
                                 'attn and mlp; fix its adapter targets')
            kinds[f'{name}.weight'] = matches[0] if matches else 'other linears'
    return kinds


def sparsity_by_kind(weights: Mapping[str, torch.Tensor],
                     kinds: Mapping[str, str]) -> Dict[str, Tuple[int, int]]:
    """``{kind: (zeros, numel)}`` in order of first appearance, then ``total``."""
    table: Dict[str, Tuple[int, int]] = {}
    for name, weight in weights.items():
        zeros, numel = table.get(kinds[name], (0, 0))
        table[kinds[name]] = (zeros + int((weight == 0).sum()), numel + weight.numel())
    table['total'] = tuple(map(sum, zip(*table.values())))
    return table
