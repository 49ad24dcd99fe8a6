"""The one extension point for adapter methods: a registered :class:`Factorization` of a weight update.

A factorization owns its trainable factors, its merge math and its forward forms. The layer it sits
in (:mod:`petah_mm.adapters.layers`) keeps only what every factorization shares: merge and unmerge
with the kept frozen kernel, the state-dict marks, dispatch, and the geometry of its op
(``apply_kernel``, ``apply_adapted_kernel``). The layer hands the frozen weight to the factorization
wherever its math needs it:

* ``merged_weight(W)`` is what merging writes into the kernel and what the fused form runs; by
  default ``W + delta_weight(W)``, overridden where the update is not additive (DoRA);
* ``adapted_forward(x, layer)`` is the unmerged forward; by default autograd through the fused
  kernel op(x, merged_weight(W)), exact for any factorization; a factorization with a cheaper form
  (LoRA's low-rank kernels and two-layer forms) overrides it;
* ``reset_parameters(W)`` re-initialises so that the merged weight is W again (identity at init).

Its own settings (LoKr's ``factor``) are keyword arguments of its constructor: presets, ``build_plan``,
the adapter files and the tools pass them through by name (:meth:`Factorization.settings`).
Adding a factorization is one module that registers its class in ``FACTORIZATIONS``, imported by
``petah_mm/adapters/__init__.py``.
"""
import inspect
import math
from typing import Dict, Optional, Tuple

import torch
from mmengine.registry import Registry
from torch import nn

FACTORIZATIONS = Registry('adapter factorization', scope='petah_mm')

#: the arguments every factorization takes; the others are its own settings
COMMON_ARGS = ('weight_shape', 'rank', 'alpha', 'dropout')


def factorization_class(name: str) -> type:
    """The registered class ``name``, or a KeyError that lists the registered ones."""
    if name not in FACTORIZATIONS:
        raise KeyError(f'unknown adapter factorization {name!r}; registered: '
                       f'{", ".join(sorted(FACTORIZATIONS.module_dict))}')
    # get rather than build: a build would look for this registry in the default scope
    return FACTORIZATIONS.get(name)


class Factorization(nn.Module):
    """ΔW = scaling · f(factors), with scaling = alpha / rank.

    Args:
        weight_shape: shape of the frozen weight, ``(out, in)`` or ``(out, in/groups, kh, kw)``.
        rank: rank r of each factor product; must be positive.
        alpha: LoRA's alpha. Defaults to ``rank``, i.e. scaling 1: the paper does not state
            its alpha, and with AdamW a constant scaling is absorbed by the adapter LR factor.

    The factors are allocated by the subclass and initialised by the layer, which calls
    :meth:`reset_parameters` with the frozen weight once the factorization is on its device.
    """

    #: names of the forward forms :meth:`use_form` can force (each a ``<name>_forward`` method)
    forms: Tuple[str, ...] = ('fused', )

    def __init__(self, weight_shape: torch.Size, rank: int, alpha: Optional[float] = None):
        super().__init__()
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ValueError(f'adapter rank must be a positive integer, got {rank!r}')
        self.weight_shape = tuple(weight_shape)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank

    @classmethod
    def settings(cls) -> Dict[str, object]:
        """This factorization's own keyword arguments and their defaults (beyond rank, alpha, dropout)."""
        params = inspect.signature(cls.__init__).parameters
        return {name: p.default for name, p in params.items() if name != 'self' and name not in COMMON_ARGS}

    def check_rank_fits(self) -> None:
        """For factorizations whose products have rank r: r must not exceed the rank of the weight."""
        most = min(self.out_features, self.in_features)
        if self.rank > most:
            raise ValueError(f'adapter rank {self.rank} exceeds the rank of a {self.weight_shape} weight (at most '
                             f'min(out, in/groups·k²) = {most}); choose a rank in [1, {most}] or narrow the '
                             'target patterns')

    @property
    def out_features(self) -> int:
        return self.weight_shape[0]

    @property
    def in_features(self) -> int:
        """Columns of the weight seen as the 2-D matrix W2D = W.reshape(out, -1)."""
        return math.prod(self.weight_shape[1:])

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """ΔW for the frozen kernel ``weight``: what merging adds to it."""
        raise NotImplementedError

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The kernel the adapted layer computes with: merging writes it, the fused form runs it."""
        return weight + self.delta_weight(weight)

    def adapted_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        return self.fused_forward(x, layer)

    def fused_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """Autograd through op(x, merged kernel): exact for any factorization and any layer."""
        return layer.apply_adapted_kernel(x, self.merged_weight(layer.weight))

    def use_form(self, form: str) -> None:
        """Run every unmerged forward of this factorization in ``form``, one of :attr:`forms`.

        For ablations that measure what a form's choice is worth. The choice shadows
        :meth:`adapted_forward` on this instance, so the default dispatch pays nothing for it.
        """
        if form not in self.forms:
            raise ValueError(f'{type(self).__name__} has no forward form {form!r}; its forms: {", ".join(self.forms)}')
        self.adapted_forward = getattr(self, f'{form}_forward')

    def reset_parameters(self, weight: torch.Tensor) -> None:
        """Re-initialise so that the merged weight is ``weight`` again (identity at init)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f'rank={self.rank}, alpha={self.alpha:g}, weight_shape={self.weight_shape}'
