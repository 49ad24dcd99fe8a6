"""Apply an :class:`AdapterPlan` to a model whose target groups are declared as regexes.

Nothing here knows any backbone: ``targets`` maps a group name to regular expressions that
must match whole module names (``re.fullmatch``), e.g. ``{'attn': [r'.*\\.token_mixer\\.(qkv|proj)']}``.
"""
import re
from typing import Dict, List, Sequence

from torch import nn

from ..utils.modules import replace_module
from .layers import ADAPTER_KEY, AdaptedLayerMixin, adapt_layer
from .methods import AdapterPlan

Targets = Dict[str, Sequence[str]]


def resolve_targets(model: nn.Module, targets: Targets, group: str, method: str) -> List[str]:
    """Names of the modules in ``group``; an empty match is an error, never a silent no-op."""
    if group not in targets:
        raise KeyError(f'method {method!r} needs the target group {group!r}, but '
                       f'{type(model).__name__} declares only {sorted(targets)}')
    patterns = list(targets[group])
    names = [name for name, _ in model.named_modules()
             if name and any(re.fullmatch(p, name) for p in patterns)]
    if not names:
        raise ValueError(f'method {method!r}: target group {group!r} patterns {patterns} matched no '
                         f'module of {type(model).__name__}')
    return names


def inject_adapters(model: nn.Module, targets: Targets, plan: AdapterPlan) -> Dict[str, List[str]]:
    """Replace every targeted layer by its adapted twin; returns group -> adapted module names."""
    adapted = {}
    for group, adapter_cfg in plan.adapters.items():
        names = resolve_targets(model, targets, group, plan.method)
        for name in names:
            replace_module(model, name, adapt_layer(name, model.get_submodule(name), adapter_cfg))
        adapted[group] = names
    return adapted


def adapted_layers(model: nn.Module) -> Dict[str, AdaptedLayerMixin]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedLayerMixin)}


def task_parameter_names(model: nn.Module, targets: Targets, plan: AdapterPlan) -> List[str]:
    """The backbone parameters a task owns under ``plan``: what trains and what an adapter file holds."""
    if plan.train_all:
        return [name for name, _ in model.named_parameters()]
    names = [f'{layer}{ADAPTER_KEY}{param}' for layer, module in adapted_layers(model).items()
             for param, _ in module.adapter.named_parameters()]
    for group in plan.trainable_groups:
        for module_name in resolve_targets(model, targets, group, plan.method):
            names += [f'{module_name}.{param}'
                      for param, _ in model.get_submodule(module_name).named_parameters()]
    return names


def set_trainable(model: nn.Module, names: Sequence[str]) -> None:
    """requires_grad exactly for ``names``; everything else in ``model`` is frozen."""
    names = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
