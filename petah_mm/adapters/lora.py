"""LoRA (Hu et al. 2021; PETAH Eq. (1) and (2)) and its forward forms.

Four forms compute the unmerged layer, and :meth:`LoRA.adapted_forward` picks one per call:

* ``kernel``: the low-rank training kernels of :mod:`petah_mm.adapters.low_rank_kernels`
  (training with gradients, frozen W and bias, no dropout, ungrouped zero-padded convolutions);
* ``branch``: the paper's Eq. (2), op(x, W) + B(A(dropout(x))), with autograd (dropout, traces);
* ``thin``: inference's two-layer form op(x, W) + s·B(A(x)), B's product added in place;
* ``fused``: op(x, W + ΔW), W + ΔW built by one ``addmm`` (large inputs, grouped convolutions).

The thin and kernel forms differ between a Linear and a Conv2d; the factorization picks the pair
for its weight's dimensions once, at construction. Between thin and fused at inference, FLOPs decide,
or a measurement on this CPU where :func:`.form_choice.tune_unmerged_forms` made one
(:meth:`LoRA.inference_form`). DoRA trains
through the same kernels (:mod:`.dora`).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .factorizations import FACTORIZATIONS, Factorization
from .form_choice import form_key, tracing_or_compiling
from .layers import bias_plus_product
from .low_rank_kernels import batched_left_mul, lora_delta, lora_kernel, low_rank_conv2d, low_rank_linear


def add_scaled_product_(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor, scaling: float) -> torch.Tensor:
    """``out += scaling · left @ right`` for batches of matrices, as one in-place ``baddbmm_``: one pass
    over ``out``, no temporary of its size (``addmm_`` copies its output once more). ``out`` must be a
    fresh result that nothing else holds. While tracing it is ``out + scaling · left @ right``, the ops
    that FLOPs counters count."""
    if left.dtype != out.dtype or right.dtype != out.dtype:  # in-place ops are not autocast's
        left, right = left.to(out.dtype), right.to(out.dtype)
    if torch.jit.is_tracing():
        return out + (left @ right) * scaling
    return out.baddbmm_(left, right, alpha=scaling)


def frozen(layer) -> bool:
    """The low-rank kernels give no gradient to the frozen weight and bias."""
    return not layer.weight.requires_grad and (layer.bias is None or not layer.bias.requires_grad)


def kernel_applies_linear(layer) -> bool:
    return frozen(layer) and layer.supports_branch


def kernel_applies_conv2d(layer) -> bool:
    plain_padding = layer.padding_mode == 'zeros' and not isinstance(layer.padding, str)
    return plain_padding and frozen(layer) and layer.supports_branch


def kernel_linear(layer, x, lora_A, lora_B, scaling, bias):
    return low_rank_linear(x, layer.weight, bias, lora_A, lora_B, scaling)


def kernel_conv2d(layer, x, lora_A, lora_B, scaling, bias):
    """The kernels take the padding as explicit zeros: a same-padding layer pads x first (autograd takes the
    pad's backward), so that W and A see the same padded input."""
    x, padding = layer.padded_input(x)
    return low_rank_conv2d(x, layer.weight, bias, lora_A, lora_B, scaling, layer.stride, padding, layer.dilation)


def thin_linear(layer, x, lora_A, lora_B, scaling, form=None):
    """op(x, W) + s·B(A(x)) for a Linear (no dropout, no autograd needed); a Linear has one way to run W."""
    hidden = F.linear(x, lora_A)  # first, while x is still in cache: op(x, W) streams the whole kernel through it
    out = F.linear(x, layer.weight, layer.bias)
    return add_scaled_product_(out.view(1, -1, out.shape[-1]), hidden.view(1, -1, hidden.shape[-1]),
                               lora_B.t().unsqueeze(0), scaling).view(out.shape)


def thin_conv2d(layer, x, lora_A, lora_B, scaling, form=None):
    """op(x, W) + s·B(A(x)) for a Conv2d; as matrix products where the layer runs its kernel so in ``form``."""
    if x.dim() != 4:  # an unbatched input
        return layer.apply_kernel(x, layer.weight, layer.bias) + F.conv2d(layer.apply_kernel(x, lora_A),
                                                                          lora_B * scaling)
    rank = lora_A.shape[0]
    up = lora_B.reshape(1, -1, rank).expand(x.shape[0], -1, -1)
    if layer.runs_as_matmul(x, form):
        # B(s·A x) + b first, W x accumulated onto it in place: no pass over the output of its own
        tokens = x.flatten(2)
        low_rank = bias_plus_product(layer.bias, up, batched_left_mul(lora_A.reshape(rank, -1) * scaling, tokens))
        return add_scaled_product_(low_rank, layer.batched(layer.weight, x), tokens, 1.).view(layer.output_shape(x))
    # A's product first, while x is still in cache: op(x, W) streams the whole kernel through it
    if layer.is_pointwise and x.is_contiguous():
        # A as a matrix product: oneDNN runs a convolution with r output channels far below its speed
        hidden = batched_left_mul(lora_A.reshape(rank, -1), x.flatten(2))
    else:
        hidden = layer.apply_kernel(x, lora_A).flatten(2)
    out = layer.apply_kernel(x, layer.weight, layer.bias)
    return add_scaled_product_(out.flatten(2), up, hidden, scaling).view(out.shape)


def lora_factors(weight_shape, rank: int) -> Tuple[nn.Parameter, nn.Parameter]:
    """Uninitialised A (r, in/groups, kh, kw) and B (out, r, 1, 1), or (r, in) and (out, r) for a Linear."""
    ones = (1, ) * (len(weight_shape) - 2)
    return nn.Parameter(torch.empty(rank, *weight_shape[1:])), nn.Parameter(torch.empty(weight_shape[0], rank, *ones))


def init_lora_(lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    """As peft's LoRA and mmpretrain's LoRALinear: A (their lora_A / lora_down, in -> r) is Kaiming-uniform
    with a=sqrt(5), B (lora_B / lora_up, r -> out) is zero, so that ΔW starts at zero."""
    nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
    nn.init.zeros_(lora_B)


def low_rank_output(layer, x, lora_A, lora_B, scaling):
    """B(A(x)) · scaling with the layer's geometry for A, the scaling folded into B: Eq. (2)'s second term."""
    hidden = layer.apply_kernel(x, lora_A)
    up = lora_B * scaling
    return F.linear(hidden, up) if up.dim() == 2 else F.conv2d(hidden, up)


#: weight dimensions -> (whether the kernels apply to the layer, the kernel form (with the bias it adds, or None),
#: the thin form)
LAYER_FORMS = {2: (kernel_applies_linear, kernel_linear, thin_linear),
               4: (kernel_applies_conv2d, kernel_conv2d, thin_conv2d)}


@FACTORIZATIONS.register_module(name='lora')
class LoRA(Factorization):
    """ΔW = reshape(B2D · A2D) · scaling (Hu et al. 2021; PETAH Eq. (1) and (2)).

    The factors are stored in their 4-D convolution form for convolutions: A is a k×k kernel
    with r output channels, B a 1×1 kernel back to the output channels, so the unmerged path
    is exactly conv(conv(x, A), B) with the frozen conv's stride, padding, dilation and padding
    mode (a TF "same" padding conv's input pad included). B starts at zero, so the adapted layer
    equals the frozen one at init.
    """

    forms = ('kernel', 'branch', 'thin', 'fused')

    def __init__(self, weight_shape, rank, alpha=None, dropout: float = 0.):
        super().__init__(weight_shape, rank, alpha)
        self.check_rank_fits()
        self.lora_A, self.lora_B = lora_factors(self.weight_shape, rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        out, fan_in = self.out_features, self.in_features
        #: output positions below which inference's two-layer form costs fewer FLOPs than W + ΔW
        self.thin_form_max_positions = out * fan_in * (rank + 1) / (rank * (fan_in + out) + out)
        #: the form measured fastest on this machine per :func:`.form_choice.form_key`, one of its FORMS or
        #: CONV_FORMS (filled by :func:`.form_choice.tune_unmerged_forms`; empty: the FLOPs rule)
        self.measured_forms = {}
        self._kernel_applies, self._kernel, self._thin = LAYER_FORMS[len(self.weight_shape)]

    def reset_parameters(self, weight: torch.Tensor) -> None:
        init_lora_(self.lora_A, self.lora_B)

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """ΔW does not depend on W."""
        return lora_delta(self.lora_A, self.lora_B, self.scaling, self.weight_shape)

    def fused_forward(self, x: torch.Tensor, layer, form: Optional[str] = None) -> torch.Tensor:
        """``form``: this call's form where :meth:`inference_form` looked it up already, else looked up as needed."""
        kernel = lora_kernel(layer.weight, self.lora_A, self.lora_B, self.scaling)
        return layer.apply_adapted_kernel(x, kernel, form)

    def kernel_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        return self._kernel(layer, x, self.lora_A, self.lora_B, self.scaling, layer.bias)

    def thin_forward(self, x: torch.Tensor, layer, form: Optional[str] = None) -> torch.Tensor:
        """Inference's two-layer form op(x, W) + s·B(A(x)) (no dropout, no autograd needed)."""
        return self._thin(layer, x, self.lora_A, self.lora_B, self.scaling, form)

    def inference_form(self, x: torch.Tensor, layer) -> str:
        """The form this input runs in at inference, looked up once per call (an unmerged forward asks it for every
        adapted layer): as measured on this CPU where :func:`.form_choice.tune_unmerged_forms` measured this input's
        kind (eager CPU forwards only, one of its FORMS or CONV_FORMS), else 'thin' or 'fused' by FLOPs.

        Both run op(x, W)'s FLOPs once. On top, the fused kernel builds ΔW and adds it to W once per
        call (out·fan_in·(r + 1)); the two-layer form runs A and B and adds their output at every
        output position (positions·(r·(fan_in + out) + out)). At batch 1 on 7×7 tokens the thin form
        wins; on large feature maps the fused kernel does. The threshold is computed once, at init.
        """
        positions = layer.output_positions(x)
        form = self.measured_form(x, positions)
        if form is not None:
            return form
        return 'thin' if positions < self.thin_form_max_positions else 'fused'

    def measured_form(self, x: torch.Tensor, positions: int) -> Optional[str]:
        """The form measured fastest on this CPU for inputs like ``x`` (eager CPU forwards only), or None."""
        if self.measured_forms and x.device.type == 'cpu' and not tracing_or_compiling():
            return self.measured_forms.get(form_key(x, positions))
        return None

    def adapted_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """Training takes the low-rank kernels where they apply (they need one input for W and A, so
        no dropout), else the paper's two-layer branch, else the fused kernel (grouped convolutions).
        Inference, eval mode and traces take plain ops, per layer the cheaper of the fused kernel and
        the two-layer form for this input's size: FLOPs counters trace the model (with gradients
        enabled) and count a custom autograd function as zero."""
        if self.training:
            with_grad = torch.is_grad_enabled() and not torch.jit.is_tracing()
            if with_grad and self.kernel_applies(layer):
                return self.kernel_forward(x, layer)
            if layer.supports_branch and (with_grad or not isinstance(self.dropout, nn.Identity)):
                return self.branch_forward(x, layer)
        if not layer.supports_branch:
            return self.fused_forward(x, layer)
        form = self.inference_form(x, layer)
        if form.startswith('thin'):
            return self.thin_forward(x, layer, form)
        return self.fused_forward(x, layer, form)

    def kernel_applies(self, layer) -> bool:
        """Whether the low-rank training kernels compute this layer exactly; they need one input for W and A, so no
        dropout."""
        return isinstance(self.dropout, nn.Identity) and self._kernel_applies(layer)

    def branch_forward(self, x: torch.Tensor, layer) -> torch.Tensor:
        """The paper's Eq. (2): op(x, W) + B(A(dropout(x))), the scaling folded into B."""
        lifted = low_rank_output(layer, self.dropout(x), self.lora_A, self.lora_B, self.scaling)
        return layer.apply_kernel(x, layer.weight, layer.bias) + lifted
