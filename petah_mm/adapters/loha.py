"""LoHa (Hyeon-Woo et al. 2021; LyCORIS): a Hadamard product of two low-rank products."""
import math

import torch
from torch import nn

from .factorizations import FACTORIZATIONS, Factorization


@FACTORIZATIONS.register_module(name='loha')
class LoHa(Factorization):
    """ΔW = reshape((B1 · A1) ⊙ (B2 · A2)) · scaling.

    Twice LoRA's parameters for a delta of rank up to r². The Hadamard product has no cheap
    two-convolution form, so training uses the fused path conv(x, W + ΔW). Dropout on the
    input is not defined for the fused path, so it is refused rather than ignored.
    """

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        self.check_rank_fits()
        if dropout:
            raise ValueError(f'dropout={dropout} is not supported by the LoHa factorization '
                             '(it trains through the fused kernel); set adapter.dropout=0')
        self.hada_w1_a = nn.Parameter(torch.empty(self.out_features, rank))
        self.hada_w1_b = nn.Parameter(torch.empty(rank, self.in_features))
        self.hada_w2_a = nn.Parameter(torch.empty(self.out_features, rank))
        self.hada_w2_b = nn.Parameter(torch.empty(rank, self.in_features))

    def reset_parameters(self, weight: torch.Tensor) -> None:
        # peft's LoHa init: w2_b at zero makes the Hadamard product, hence ΔW, zero.
        for factor in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a):
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))
        nn.init.zeros_(self.hada_w2_b)

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.hada_w1_a @ self.hada_w1_b) * (self.hada_w2_a @ self.hada_w2_b)
        return delta.reshape(self.weight_shape) * self.scaling
