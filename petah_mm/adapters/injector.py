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
    """Replace every targeted layer by its adapted twin; returns group -> adapted module names.

    Per-layer ranks (``plan.layer_ranks``) must name exactly the targeted layers: checked before any layer
    changes, so a stale or foreign rank table never adapts a model partly."""
    adapted = {group: resolve_targets(model, targets, group, plan.method) for group in plan.adapters}
    if plan.needs_ranks:
        raise ValueError(f'adapter.budget={plan.budget!r} gives each layer a rank measured on data, but the config '
                         'has no adapter.layer_ranks yet: run python tools/analysis_tools/allocate_ranks.py CONFIG '
                         '--out NEW_CONFIG.py and use NEW_CONFIG.py')
    if plan.layer_ranks is not None:
        check_layer_names(plan.layer_ranks, adapted)
    for group, adapter_cfg in plan.adapters.items():
        for name in adapted[group]:
            cfg = adapter_cfg if plan.layer_ranks is None else dict(adapter_cfg, rank=plan.layer_ranks[name])
            try:
                layer = adapt_layer(name, model.get_submodule(name), cfg)
            except ValueError as e:
                if plan.layer_ranks is None:
                    raise
                raise ValueError(f'adapter.layer_ranks[{name!r}]={cfg["rank"]}: {e}') from e
            replace_module(model, name, layer)
    return adapted


def check_layer_names(layer_ranks: Dict[str, int], adapted: Dict[str, List[str]]) -> None:
    """Every adapted layer has a rank and every rank an adapted layer, or a ValueError naming the first that does
    not."""
    names = [name for group in adapted.values() for name in group]
    known = set(names)
    unknown = [name for name in layer_ranks if name not in known]
    if unknown:
        raise ValueError(f'adapter.layer_ranks[{unknown[0]!r}]: no adapted layer of this backbone has that name '
                         f'({len(unknown)} unknown; adapted layers: {", ".join(names[:3])}, ...); the ranks were '
                         'allocated for another backbone or targets: run tools/analysis_tools/allocate_ranks.py again')
    missing = [name for name in names if name not in layer_ranks]
    if missing:
        raise ValueError(f'adapter.layer_ranks has no rank for the adapted layer {missing[0]!r} ({len(missing)} '
                         'missing); every adapted layer needs one: run tools/analysis_tools/allocate_ranks.py again')


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
