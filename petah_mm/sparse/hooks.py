"""Fine-tuning a pruned backbone without un-pruning it."""
from typing import List, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .pruning import prunable_weights


@HOOKS.register_module()
class PreserveSparsityHook(Hook):
    """Keep the pruned conv/linear weights of ``model.<module>`` at exactly zero while they train.

    PETAH Sec. 5.1: full and attention fine-tuning of a sparse backbone keep the pre-training mask
    and only tune the non-zero weights. ``before_train`` runs after the Runner has loaded or
    resumed the weights, so the zeros it finds are the checkpoint's mask (a pruned checkpoint
    carries no separate mask). Pruned entries then get zero gradient, so the optimizer state,
    gradient clipping and the update see only the kept weights. That keeps them at zero under
    SGD, Adam(W) and the like; re-zeroing them after every iteration holds the mask whatever
    else an update rule does. Frozen weights are left alone: they cannot change.

    Args:
        module: attribute path of the sparse part of the model.
    """

    priority = 'ABOVE_NORMAL'  # re-zero before EMAHook (NORMAL) averages the weights

    def __init__(self, module: str = 'backbone'):
        self.module = module
        self._pruned: List[Tuple[torch.nn.Parameter, torch.Tensor]] = []
        self._handles = []

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        try:
            sparse_part = model.get_submodule(self.module)
        except AttributeError as e:
            raise AttributeError(f'PreserveSparsityHook(module={self.module!r}): {type(model).__name__} has no '
                                 'such submodule; set module= to the pruned part of the model') from e
        trainable = {name: w for name, w in prunable_weights(sparse_part).items() if w.requires_grad}
        where = f'model.{self.module} ({type(sparse_part).__name__})'
        if not trainable:
            raise ValueError(f'PreserveSparsityHook: no conv/linear weight of {where} trains, so there is no '
                             'mask to preserve (adapter methods leave the sparse weights frozen); remove the '
                             'hook from custom_hooks')
        self._pruned = [(w, w.detach() == 0) for w in trainable.values()]
        pruned = sum(int(mask.sum()) for _, mask in self._pruned)
        total = sum(w.numel() for w in trainable.values())
        if not pruned:
            raise ValueError(f'PreserveSparsityHook: the {total:,} trainable conv/linear weights of {where} have '
                             'no zero, so the loaded backbone is dense; load a pruned checkpoint '
                             '(tools/model_converters/prune_backbone.py) or remove the hook')
        self._handles = [w.register_hook(lambda grad, mask=mask: grad.masked_fill(mask, 0.))
                         for w, mask in self._pruned]
        print_log(f'PreserveSparsityHook: {total - pruned:,} of {total:,} trainable conv/linear weights of {where} '
                  f'train, {pruned:,} ({pruned / total:.1%}) stay zero', logger='current')

    @torch.no_grad()
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for weight, mask in self._pruned:
            weight.masked_fill_(mask, 0.)

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._pruned = [], []
