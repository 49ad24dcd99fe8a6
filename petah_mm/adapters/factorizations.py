"""Low-rank factorizations of a weight update ΔW for a frozen ``nn.Linear`` or ``nn.Conv2d``.

A factorization owns only its trainable factors. ``delta_weight()`` is the single place where
the merge math lives; layers call it to merge, unmerge, or run the fused training path. A
factorization that also has a cheaper unmerged path (LoRA's two small convolutions, the paper's
Eq. (2)) exposes it as ``branch``. Adding a factorization means one class registered in
``FACTORIZATIONS``; the injector and the layers need no change.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.registry import Registry
from torch import nn

FACTORIZATIONS = Registry('adapter factorization', scope='petah_mm')


class Factorization(nn.Module):
    """ΔW = scaling · f(factors), with scaling = alpha / rank.

    Args:
        weight_shape: shape of the frozen weight, ``(out, in)`` or ``(out, in/groups, kh, kw)``.
        rank: rank r of each factor product; must be positive.
        alpha: LoRA's alpha. Defaults to ``rank``, i.e. scaling 1: the paper does not state
            its alpha, and with AdamW a constant scaling is absorbed by the adapter LR factor.
    """

    #: whether ``branch(x, layer)`` exists, letting the layer skip building ΔW while training
    has_branch = False

    def __init__(self, weight_shape: torch.Size, rank: int, alpha: Optional[float] = None):
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f'adapter rank must be a positive integer, got {rank!r}')
        self.weight_shape = tuple(weight_shape)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank

    @property
    def out_features(self) -> int:
        return self.weight_shape[0]

    @property
    def in_features(self) -> int:
        """Columns of the weight seen as the 2-D matrix W2D = W.reshape(out, -1)."""
        return math.prod(self.weight_shape[1:])

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Re-initialise so that ΔW = 0 again (identity at init)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f'rank={self.rank}, alpha={self.alpha:g}, weight_shape={self.weight_shape}'


@FACTORIZATIONS.register_module(name='lora')
class LoRA(Factorization):
    """ΔW = reshape(B2D · A2D) · scaling (Hu et al. 2021; PETAH Eq. (1) and (2)).

    The factors are stored in their 4-D convolution form for convolutions: A is a k×k kernel
    with r output channels, B a 1×1 kernel back to the output channels, so the unmerged path
    is exactly conv(conv(x, A), B) with the frozen conv's stride, padding, dilation and padding
    mode. B starts at zero, so the adapted layer equals the frozen one at init.
    """

    has_branch = True

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        ones = (1, ) * (len(self.weight_shape) - 2)
        self.lora_A = nn.Parameter(torch.empty(rank, *self.weight_shape[1:]))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, *ones))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same init as peft and mmpretrain's LoRALinear.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        b2d = self.lora_B.reshape(self.out_features, self.rank)
        a2d = self.lora_A.reshape(self.rank, self.in_features)
        return (b2d @ a2d).reshape(self.weight_shape) * self.scaling

    def branch(self, x: torch.Tensor, layer) -> torch.Tensor:
        """B(A(dropout(x))) with the scaling folded into the small B kernel."""
        hidden = layer.apply_kernel(self.dropout(x), self.lora_A)
        up = self.lora_B * self.scaling
        return F.linear(hidden, up) if up.dim() == 2 else F.conv2d(hidden, up)


@FACTORIZATIONS.register_module(name='loha')
class LoHa(Factorization):
    """ΔW = reshape((B1 · A1) ⊙ (B2 · A2)) · scaling (Hyeon-Woo et al. 2021; LyCORIS).

    Twice LoRA's parameters for a delta of rank up to r². The Hadamard product has no cheap
    two-convolution form, so training uses the fused path conv(x, W + ΔW). Dropout on the
    input is not defined for the fused path, so it is refused rather than ignored.
    """

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        if dropout:
            raise ValueError(f'dropout={dropout} is not supported by the LoHa factorization '
                             '(it trains through the fused kernel); set adapter.dropout=0')
        self.hada_w1_a = nn.Parameter(torch.empty(self.out_features, rank))
        self.hada_w1_b = nn.Parameter(torch.empty(rank, self.in_features))
        self.hada_w2_a = nn.Parameter(torch.empty(self.out_features, rank))
        self.hada_w2_b = nn.Parameter(torch.empty(rank, self.in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # peft's LoHa init: w2_b at zero makes the Hadamard product, hence ΔW, zero.
        for factor in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a):
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))
        nn.init.zeros_(self.hada_w2_b)

    def delta_weight(self) -> torch.Tensor:
        delta = (self.hada_w1_a @ self.hada_w1_b) * (self.hada_w2_a @ self.hada_w2_b)
        return delta.reshape(self.weight_shape) * self.scaling
