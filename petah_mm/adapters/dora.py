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
from .lora import LAYER_FORMS, init_lora_, lora_factors, low_rank_output
from .low_rank_kernels import lora_kernel


def channel_norms(kernel: torch.Tensor) -> torch.Tensor:
    """‖kernel[o]‖₂ for each output channel o: the norm over every dimension but the first."""
    return kernel.reshape(kernel.shape[0], -1).norm(dim=1)


@FACTORIZATIONS.register_module(name='dora')
class DoRA(Factorization):
    """LoRA's factors ``lora_A`` and ``lora_B`` (same shapes and init) plus ``magnitude``, one per output channel.

    With ‖V‖ detached, the adapted layer is ``(m / ‖V‖) · (op(x, W) + s·B(A(x))) + b``: the frozen
    op plus LoRA's low-rank branch, scaled per output channel. Its forms:

    * ``kernel`` (training with gradients, no dropout, where LoRA's low-rank kernels apply): LoRA's
      kernel for op(x, W) + s·B(A(x)) + b = op(x, V) + b, then rescaled per output channel. Autograd
      sees the kernel's rank-r gradients and a per-channel product, never a full-kernel weight
      gradient; the gradients are the fused form's. ‖V‖ is built under ``no_grad`` in the weight's
      dtype, autocast off, as merging builds it;
    * ``branch`` (training with dropout): peft's form, the same sum by autograd, dropout acting on
      the low-rank input only;
    * ``fused`` (everything else: inference, traces, grouped convolutions, which have no two-layer
      form, and layers the kernels do not fit, e.g. a trainable W or bias, reflect padding):
      autograd through op(x, m · V / ‖V‖). At inference the low-rank forms save nothing: the scale
      needs ‖V‖, hence V, in every call, which is what the fused kernel builds.
    """

    forms = ('kernel', 'branch', 'fused')

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        self.check_rank_fits()
        self.lora_A, self.lora_B = lora_factors(self.weight_shape, rank)
        self.magnitude = nn.Parameter(torch.empty(self.out_features))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        #: broadcasts a per-output-channel vector over an output: (..., out) or (N, out, H, W)
        self.output_view = (-1, ) + (1, ) * (len(self.weight_shape) - 2)
        self._kernel_applies, self._kernel, _ = LAYER_FORMS[len(self.weight_shape)]

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

    def rescaled(self, out: torch.Tensor, layer, biased: bool) -> torch.Tensor:
        """(m / ‖V‖) · op(x, V) + b from ``out`` = op(x, V) + b (``biased``: the layer's own op, so that at init,
        where m / ‖V‖ is exactly 1, the result is the frozen layer's bit for bit) or ``out`` = op(x, V).

        One ``addcmul`` pass over the output, in its dtype: under autocast a bf16 output times the fp32
        scale would be promoted to an fp32 copy of the output.
        """
        with torch.no_grad(), torch.autocast(out.device.type, enabled=False):
            direction = lora_kernel(layer.weight, self.lora_A, self.lora_B, self.scaling)
        scale = self.scale(direction).to(out.dtype).view(self.output_view)
        if layer.bias is None:
            return out * scale
        bias = layer.bias.to(out.dtype).view(self.output_view)
        return torch.addcmul(bias - bias * scale if biased else bias, out, scale)

    def kernel_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """LoRA's low-rank kernel for op(x, W) + s·B(A(x)) + b = op(x, V) + b, rescaled."""
        return self.rescaled(self._kernel(layer, x, self.lora_A, self.lora_B, self.scaling, layer.bias), layer, True)

    def branch_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """peft's form: (m / ‖V‖) · (op(x, W) + s·B(A(dropout(x)))) + b."""
        if not layer.supports_branch:
            raise ValueError('DoRA with dropout needs its two-layer form, which a grouped convolution lacks; '
                             'set adapter.dropout=0 or narrow the target patterns')
        lifted = low_rank_output(layer, self.dropout(x), self.lora_A, self.lora_B, self.scaling)
        return self.rescaled(layer.apply_kernel(x, layer.weight) + lifted, layer, False)

    def adapted_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """The forms of the class docstring."""
        if self.training:
            dropout = not isinstance(self.dropout, nn.Identity)
            with_grad = torch.is_grad_enabled() and not torch.jit.is_tracing()
            if with_grad and not dropout and self._kernel_applies(layer):
                return self.kernel_forward(x, layer)
            if dropout:
                return self.branch_forward(x, layer)
        return self.fused_forward(x, layer)
