"""Fold the frozen BatchNorm after each adapted convolution into that convolution, for the multi-task graph.

A merged graph needs no BatchNorm at run time: ORT folds it into the constant kernel W + ΔW. The
multi-task graph builds its kernel at run time from the task's fed factors, so ORT cannot fold, and
every such BatchNorm runs on the activations. But the norm is frozen and shared by every task, and
LoRA's ΔW = B·A is linear in B's rows, so with s = γ / sqrt(σ² + ε) per output channel:

    BN(conv(x, W + B·A) + b) = conv(x, s·W + (s⊙B)·A) + s·(b − μ) + β

s·W and the new bias are frozen (written once, in the shared graph); s⊙B is the task's own factor,
scaled when the task's feeds are written. No BatchNorm node is left after those convolutions; what a
norm module does after normalising stays (timm's ``BatchNormAct2d``: its dropout and activation).
"""
import copy
from typing import Dict, List, Optional, Tuple

import torch
from timm.layers.norm_act import BatchNormAct2d
from torch import nn

from ...adapters.injector import adapted_layers
from ...adapters.layers import AdaptedConv2d
from ...adapters.lora import LoRA
from ...utils import FrozenBatchNorm2d
from ...utils.modules import replace_module

#: the lora_B name of a layer -> its output channels' scale s
Scales = Dict[str, torch.Tensor]


def after_norm(norm: nn.Module) -> Optional[nn.Module]:
    """What ``norm``'s forward does after normalising, which stays when the normalisation is folded away; None
    for a module whose forward petah_mm does not know (it is not folded)."""
    if type(norm) in (nn.BatchNorm2d, FrozenBatchNorm2d):
        return nn.Identity()
    if type(norm) is BatchNormAct2d:
        return nn.Sequential(norm.drop, norm.act)
    return None


def conv_norm_pairs(backbone: nn.Module, example: torch.Tensor) -> List[Tuple[str, str]]:
    """(adapted LoRA convolution, BatchNorm2d) pairs where the norm is called on the convolution's very output,
    found by running ``backbone`` on ``example`` once with hooks."""
    convs = {name: m for name, m in adapted_layers(backbone).items()
             if isinstance(m, AdaptedConv2d) and type(m.adapter) is LoRA and not m.merged}
    produced, pairs, hooks = {}, [], []

    def remember(name):
        def hook(module, args, output):
            produced[id(output)] = (name, output)  # the tensor is kept alive, so its id is not reused
        return hook

    def match(name):
        def hook(module, args):
            conv = produced.get(id(args[0]))
            if conv is not None and conv[1] is args[0]:
                pairs.append((conv[0], name))
        return hook

    for name, module in backbone.named_modules():
        if name in convs:
            hooks.append(module.register_forward_hook(remember(name)))
        elif after_norm(module) is not None:
            hooks.append(module.register_forward_pre_hook(match(name)))
    try:
        with torch.no_grad():
            backbone.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    used = [conv for conv, _ in pairs]
    # a convolution whose output feeds two norms (or one norm twice) is left alone
    return [(conv, norm) for conv, norm in pairs if used.count(conv) == 1]


@torch.no_grad()
def fold_norms(backbone: nn.Module, example: torch.Tensor, task_tensors: List[str]) -> Tuple[nn.Module, Scales]:
    """A copy of ``backbone`` (eval mode) whose frozen BatchNorms after adapted LoRA convolutions are folded
    into them, and the scale each folded layer's task factor ``lora_B`` must be multiplied by.

    Norms among ``task_tensors`` (they train with the task) are not shared, and stay."""
    folded = copy.deepcopy(backbone).eval()
    scales = {}
    for conv_name, norm_name in conv_norm_pairs(folded, example):
        norm = folded.get_submodule(norm_name)
        if any(name.startswith(f'{norm_name}.') for name in task_tensors):
            continue
        conv = folded.get_submodule(conv_name)
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        conv.weight.data = conv.weight * scale.view(-1, 1, 1, 1)
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias, requires_grad=False)
        conv.adapter.lora_B.data = conv.adapter.lora_B * scale.view(-1, 1, 1, 1)
        scales[f'{conv_name}.adapter.lora_B'] = scale.clone()
        replace_module(folded, norm_name, after_norm(norm))
    return folded, scales


def scaled_feeds(state: Dict[str, torch.Tensor], names: List[str], scales: Scales) -> Dict[str, torch.Tensor]:
    """A task's backbone feeds for the folded graph: its own ``lora_B`` of each folded layer scaled by s."""
    return {n: state[n] * scales[n].view(-1, 1, 1, 1) if n in scales else state[n] for n in names}
