"""LoKr (LyCORIS; Edalati et al. 2022, "KronA"): a Kronecker product of a small and a low-rank factor.

``ΔW = kron(W1, W2) · scaling``, reshaped to the kernel. The output and input dimensions are each split
into two factors by :func:`factorization` (out = a·b, in/groups = c·d); W1 is ``(a, c)`` and W2 is
``(b, d)`` for a Linear, ``(b, d, kh, kw)`` for a Conv2d: the k×k part of the kernel stays in W2.
W2 is the low-rank product ``lokr_w2_a @ lokr_w2_b`` when the rank is below half its larger side,
else one full matrix ``lokr_w2``; with ``decompose_both``, W1 likewise (``lokr_w1_a @ lokr_w1_b``).
Shapes, the rule for low rank, scaling ``alpha / rank`` and the init (W1 or ``lokr_w1_a`` zero,
hence ΔW = 0) are peft 0.21's ``LoKrLayer`` with ``use_effective_conv2d=False``, so parameter counts
equal peft's for the same targets and settings.

It trains through the fused kernel op(x, W + ΔW); input dropout is not defined for it and is refused.
"""
import math
from typing import Tuple

import torch
from torch import nn

from .factorizations import FACTORIZATIONS, Factorization


def factorization(dimension: int, factor: int = -1) -> Tuple[int, int]:
    """Split ``dimension`` into m · n with m <= n, as peft's (and LyCORIS') ``factorization``.

    A positive ``factor`` that divides ``dimension`` gives ``(factor, dimension // factor)`` as it is;
    otherwise the split closest to the square root whose smaller side does not exceed ``factor``
    (no bound for -1).
    """
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


@FACTORIZATIONS.register_module(name='lokr')
class LoKr(Factorization):
    """ΔW = kron(W1, W2) · scaling.

    Args:
        factor: how to split each dimension (peft's ``decompose_factor``): -1 for the split nearest
            the square root, else a positive divisor to use.
        decompose_both: also factor W1 as a rank-r product when the rank is below half its larger side.
    """

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0., factor: int = -1,
                 decompose_both: bool = False):
        super().__init__(weight_shape, rank, alpha)
        if dropout:
            raise ValueError(f'dropout={dropout} is not supported by the LoKr factorization '
                             '(it trains through the fused kernel); set adapter.dropout=0')
        if not isinstance(factor, int) or isinstance(factor, bool) or not (factor == -1 or factor > 0):
            raise ValueError(f'adapter.factor must be -1 (split near the square root) or a positive integer, '
                             f'got {factor!r}')
        if not isinstance(decompose_both, bool):
            raise ValueError(f'adapter.decompose_both must be True or False, got {decompose_both!r}')
        self.factor, self.decompose_both = factor, decompose_both
        (a, b), (c, d) = factorization(self.out_features, factor), factorization(self.weight_shape[1], factor)
        kernel = self.weight_shape[2:]
        #: whether W1 / W2 are rank-r products rather than full matrices
        self.low_rank_w1, self.low_rank_w2 = decompose_both and rank < max(a, c) / 2, rank < max(b, d) / 2
        if self.low_rank_w1:
            self.lokr_w1_a = nn.Parameter(torch.empty(a, rank))
            self.lokr_w1_b = nn.Parameter(torch.empty(rank, c))
        else:
            self.lokr_w1 = nn.Parameter(torch.empty(a, c))
        if self.low_rank_w2:
            self.lokr_w2_a = nn.Parameter(torch.empty(b, rank))
            self.lokr_w2_b = nn.Parameter(torch.empty(rank, d * math.prod(kernel)))
        else:
            self.lokr_w2 = nn.Parameter(torch.empty(b, d, *kernel))

    def reset_parameters(self, weight: torch.Tensor) -> None:
        # peft's init: W1 (or its left factor) zero, so ΔW = 0; W2's factors Kaiming-uniform
        if self.low_rank_w1:
            nn.init.zeros_(self.lokr_w1_a)
            nn.init.kaiming_uniform_(self.lokr_w1_b, a=math.sqrt(5))
        else:
            nn.init.zeros_(self.lokr_w1)
        for factor in (self.lokr_w2_a, self.lokr_w2_b) if self.low_rank_w2 else (self.lokr_w2, ):
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        w1 = self.lokr_w1_a @ self.lokr_w1_b if self.low_rank_w1 else self.lokr_w1
        w2 = self.lokr_w2_a @ self.lokr_w2_b if self.low_rank_w2 else self.lokr_w2
        w2 = w2.reshape(w2.shape[0], -1)  # (b, d·kh·kw): kron's columns are then (c, d, kh, kw) in order
        return torch.kron(w1, w2).reshape(self.weight_shape) * self.scaling

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, factor={self.factor}, decompose_both={self.decompose_both}'
