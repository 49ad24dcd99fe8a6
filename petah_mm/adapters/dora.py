"""DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): LoRA's direction, a trained magnitude.

The merged kernel is ``m · V / ‖V‖`` with ``V = W + s·B·A``, the norm taken per output channel over
every other dimension of the kernel (``(in,)`` for a Linear, ``(in/groups, kh, kw)`` for a Conv2d),
and ``m`` one trained value per output channel. ``m`` starts at ``‖W‖`` and B at zero, so the
adapted layer starts as the frozen one.

The norm ‖V‖ is detached from the graph during training: gradients flow into m and into V's
direction, but not through the norm. This is the paper's Section 4.3 (‖V + ΔV‖_c is treated as a
constant, which saves the norm's backward) and what peft does (``weight_norm.detach()`` in its DoRA
layers); it changes the gradient only, never the forward or the merged kernel.
"""
import torch
from torch import nn

from .factorizations import FACTORIZATIONS, Factorization
from .lora import init_lora_, lora_factors, low_rank_output
from .low_rank_kernels import lora_kernel


def channel_norms(kernel: torch.Tensor) -> torch.Tensor:
    """‖kernel[o]‖₂ for each output channel o: the norm over every dimension but the first."""
    return kernel.reshape(kernel.shape[0], -1).norm(dim=1)


@FACTORIZATIONS.register_module(name='dora')
class DoRA(Factorization):
    """LoRA's factors ``lora_A`` and ``lora_B`` (same shapes and init) plus ``magnitude``, one per output channel.

    Unmerged, it runs the fused kernel op(x, m · V / ‖V‖): equal to peft's form and without its extra
    passes over the output. With dropout in training it runs peft's form,
    ``(m / ‖V‖) · (op(x, W) + s·B(A(dropout(x)))) + b``, as dropout acts on the low-rank input only.
    LoRA's low-rank kernels do not apply: the rescaling needs V's norm in every call.
    """

    forms = ('branch', 'fused')

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        self.check_rank_fits()
        self.lora_A, self.lora_B = lora_factors(self.weight_shape, rank)
        self.magnitude = nn.Parameter(torch.empty(self.out_features))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        #: broadcasts a per-output-channel vector over an output: (..., out) or (N, out, H, W)
        self.output_view = (-1, ) + (1, ) * (len(self.weight_shape) - 2)

    def reset_parameters(self, weight: torch.Tensor) -> None:
        init_lora_(self.lora_A, self.lora_B)
        with torch.no_grad():
            self.magnitude.copy_(channel_norms(weight))

    def scale(self, direction: torch.Tensor) -> torch.Tensor:
        """m / ‖V‖ per output channel, the norm detached (see the module docstring)."""
        return self.magnitude / channel_norms(direction).detach()

    def merged_weight(self, weight: torch.Tensor) -> torch.Tensor:
        direction = lora_kernel(weight, self.lora_A, self.lora_B, self.scaling)
        return direction * self.scale(direction).view(-1, *(1, ) * (direction.dim() - 1))

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return self.merged_weight(weight) - weight

    def branch_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """peft's form: (m / ‖V‖) · (op(x, W) + s·B(A(dropout(x)))) + b."""
        if not layer.supports_branch:
            raise ValueError('DoRA with dropout needs its two-layer form, which a grouped convolution lacks; '
                             'set adapter.dropout=0 or narrow the target patterns')
        with torch.no_grad():
            direction = lora_kernel(layer.weight, self.lora_A, self.lora_B, self.scaling)
        lifted = low_rank_output(layer, self.dropout(x), self.lora_A, self.lora_B, self.scaling)
        out = (layer.apply_kernel(x, layer.weight) + lifted) * self.scale(direction).view(self.output_view)
        return out if layer.bias is None else out + layer.bias.view(self.output_view)

    def adapted_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        if self.training and not isinstance(self.dropout, nn.Identity):
            return self.branch_forward(x, layer)
        return self.fused_forward(x, layer)
