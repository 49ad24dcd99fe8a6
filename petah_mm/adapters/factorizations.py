"""Low-rank factorizations of a weight update ΔW for a frozen ``nn.Linear`` or ``nn.Conv2d``.

A factorization owns only its trainable factors. ``delta_weight()`` is the single place where
the merge math lives; layers call it to merge and unmerge. ``adapted_forward(x, layer)`` is the
unmerged forward; by default it runs autograd through the fused kernel W + ΔW, which is exact for
any factorization, and a factorization with a cheaper form (LoRA) overrides it. Adding a
factorization means one class registered in ``FACTORIZATIONS``; the injector and the layers need
no change.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.registry import Registry
from torch import nn

FACTORIZATIONS = Registry('adapter factorization', scope='petah_mm')


def lora_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float, weight_shape) -> torch.Tensor:
    """ΔW = reshape(B2D · A2D) · scaling, shared by merging and the low-rank training kernels."""
    b2d = lora_B.reshape(lora_B.shape[0], -1)
    a2d = lora_A.reshape(lora_A.shape[0], -1)
    return (b2d @ a2d).reshape(weight_shape) * scaling


def lora_kernel(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + ΔW as one ``addmm`` instead of three ops (product, scaling, sum), each a pass over a
    kernel-sized tensor: what an unmerged forward pays per layer and call."""
    if weight.dim() == 2:  # a linear's factors are matrices already: skip four reshapes per call
        return torch.addmm(weight, lora_B, lora_A, alpha=scaling)
    b2d = lora_B.reshape(lora_B.shape[0], -1)
    a2d = lora_A.reshape(lora_A.shape[0], -1)
    return torch.addmm(weight.reshape(weight.shape[0], -1), b2d, a2d, alpha=scaling).reshape(weight.shape)


class Factorization(nn.Module):
    """ΔW = scaling · f(factors), with scaling = alpha / rank.

    Args:
        weight_shape: shape of the frozen weight, ``(out, in)`` or ``(out, in/groups, kh, kw)``.
        rank: rank r of each factor product; must be positive.
        alpha: LoRA's alpha. Defaults to ``rank``, i.e. scaling 1: the paper does not state
            its alpha, and with AdamW a constant scaling is absorbed by the adapter LR factor.
    """

    def __init__(self, weight_shape: torch.Size, rank: int, alpha: Optional[float] = None):
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f'adapter rank must be a positive integer, got {rank!r}')
        self.weight_shape = tuple(weight_shape)
        if rank > min(self.out_features, self.in_features):
            raise ValueError(f'adapter rank {rank} exceeds the rank of a {self.weight_shape} weight (at most '
                             f'min(out, in/groups·k²) = {min(self.out_features, self.in_features)}); choose a rank '
                             f'in [1, {min(self.out_features, self.in_features)}] or narrow the target patterns')
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

    def adapted_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        return self.fused_forward(x, layer)

    def fused_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """Autograd through op(x, W + ΔW): exact for any factorization and any layer."""
        return layer.apply_adapted_kernel(x, layer.weight + self.delta_weight())

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

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        ones = (1, ) * (len(self.weight_shape) - 2)
        self.lora_A = nn.Parameter(torch.empty(rank, *self.weight_shape[1:]))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, *ones))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        out, fan_in = self.out_features, self.in_features
        #: output positions below which inference's two-layer form costs fewer FLOPs than W + ΔW
        self.thin_form_max_positions = out * fan_in * (rank + 1) / (rank * (fan_in + out) + out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As peft's LoRA and mmpretrain's LoRALinear: A (their lora_A / lora_down, in -> r) is
        # Kaiming-uniform with a=sqrt(5), B (lora_B / lora_up, r -> out) is zero.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return lora_delta(self.lora_A, self.lora_B, self.scaling, self.weight_shape)

    def fused_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        return layer.apply_adapted_kernel(x, lora_kernel(layer.weight, self.lora_A, self.lora_B, self.scaling))

    def thin_form_is_cheaper(self, x: torch.Tensor, layer) -> bool:
        """Whether op(x, W) + B(A(x)) costs fewer FLOPs than op(x, W + ΔW) for this input.

        Both run op(x, W)'s FLOPs once. On top, the fused kernel builds ΔW and adds it to W once per
        call (out·fan_in·(r + 1)); the two-layer form runs A and B and adds their output at every
        output position (positions·(r·(fan_in + out) + out)). At batch 1 on 7×7 tokens the thin form
        wins; on large feature maps the fused kernel does. The threshold is computed once, at init:
        this runs in every forward of every adapted layer.
        """
        return layer.supports_branch and layer.output_positions(x) < self.thin_form_max_positions

    def adapted_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """Training takes the low-rank kernels where they apply (they need one input for W and A, so
        no dropout), else the paper's two-layer branch, else the fused kernel (grouped convolutions).
        Inference, eval mode and traces take plain ops, per layer the cheaper of the fused kernel and
        the two-layer form for this input's size: FLOPs counters trace the model (with gradients
        enabled) and count a custom autograd function as zero."""
        if self.training:
            dropout = not isinstance(self.dropout, nn.Identity)
            with_grad = torch.is_grad_enabled() and not torch.jit.is_tracing()
            if with_grad and not dropout and layer.low_rank_kernel_applies(x):
                return layer.low_rank_kernel(x, self.lora_A, self.lora_B, self.scaling)
            if layer.supports_branch and (with_grad or dropout):
                return self.branch_forward(x, layer)
        if self.thin_form_is_cheaper(x, layer):
            return layer.low_rank_branch(x, self.lora_A, self.lora_B, self.scaling)
        return self.fused_forward(x, layer)

    def branch_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """The paper's Eq. (2): op(x, W) + B(A(dropout(x))), the scaling folded into B."""
        hidden = layer.apply_kernel(self.dropout(x), self.lora_A)
        up = self.lora_B * self.scaling
        lifted = F.linear(hidden, up) if up.dim() == 2 else F.conv2d(hidden, up)
        return layer.apply_kernel(x, layer.weight, layer.bias) + lifted


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
