"""The optimizer of a model whose backbone is mostly frozen: trainable parameters only, one log line.

mmengine's ``DefaultOptimWrapperConstructor`` hands every parameter to the optimizer when
``paramwise_cfg`` is empty, and otherwise logs one line per tensor: a warning for each frozen one
(hundreds for a PETAH EfficientFormer) and its options for each trainable one. This constructor
keeps its paramwise semantics (``custom_keys`` such as the adapter LR factor
``custom_keys={'backbone': dict(lr_mult=...)}``, ``norm_decay_mult``, ...), always leaves frozen
parameters out, and logs a single summary instead.
"""
import logging
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, List

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

from ..adapters import is_adapter_key

#: what mmengine 0.10.7's add_params logs for each tensor, which the summary replaces
PER_TENSOR_MESSAGES = ('is skipped since its requires_grad=False', 'paramwise_options -- ')


class _DropPerTensorLines(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in PER_TENSOR_MESSAGES)


@contextmanager
def _without_per_tensor_lines():
    logger = MMLogger.get_current_instance()
    line_filter = _DropPerTensorLines()
    logger.addFilter(line_filter)
    try:
        yield
    finally:
        logger.removeFilter(line_filter)


def parameter_group(name: str) -> str:
    """Where a parameter sits, for the summary: the backbone's adapters, its own weights, or the rest."""
    if not name.startswith('backbone.'):
        return 'neck and heads'
    return 'backbone adapters' if is_adapter_key(name) else 'backbone own weights'


def summarize(model: nn.Module, param_groups: List[dict], base_lr: float) -> str:
    """One line: trainable parameters and their LR factors per group, and what stays frozen."""
    names = {id(p): n for n, p in model.named_parameters()}
    counts: Dict[str, int] = defaultdict(int)
    lr_mults: Dict[str, set] = defaultdict(set)
    for group in param_groups:
        for param in group['params']:
            where = parameter_group(names[id(param)])
            counts[where] += param.numel()
            lr_mults[where].add(group.get('lr', base_lr) / base_lr if base_lr else 1.0)
    parts = []
    for where in ('backbone adapters', 'backbone own weights', 'neck and heads'):
        factors = '/'.join(f'{m:g}' for m in sorted(lr_mults[where]))
        parts.append(f'{where} {counts[where]:,}' + (f' (lr x{factors})' if counts[where] else ''))
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return f'optimizer: {sum(counts.values()):,} trainable parameters: {", ".join(parts)}; {frozen:,} frozen, left out'


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PETAHOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` over the trainable parameters only, with a one-line summary."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, 'module', model)
        param_groups: List[dict] = []
        with _without_per_tensor_lines():
            self.add_params(param_groups, model)  # skips frozen parameters, whatever paramwise_cfg holds
        if not param_groups:
            raise ValueError(f'{type(model).__name__} has no trainable parameter: nothing to optimize. '
                             'Check model.backbone.adapter.method and the frozen parts of the config.')
        print_log(summarize(model, param_groups, self.base_lr), logger='current')
        optimizer = OPTIMIZERS.build(dict(self.optimizer_cfg, params=param_groups))
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
