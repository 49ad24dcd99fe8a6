"""Frozen ``nn.Linear`` / ``nn.Conv2d`` layers that carry a trainable factorized delta.

An adapted layer *is* an ``nn.Linear`` / ``nn.Conv2d`` sharing the original ``weight`` and
``bias`` Parameters under their original names. Pretrained checkpoints therefore load without
key remapping, a merged model is a plain state dict once the ``adapter.*`` keys are dropped,
and mmengine's layer-name based ``init_cfg`` (e.g. ``layer='Conv2d'``) only ever touches the
frozen ``weight``/``bias``, never the adapter factors (which live in a child module that is
neither a Linear nor a Conv2d).
"""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
from torch import nn

from .autocast import autocast_dtype
from .factorizations import FACTORIZATIONS, Factorization
from .low_rank_kernels import batched_left_mul, low_rank_conv2d, low_rank_linear

#: state-dict key (under the layer's prefix) marking a state dict taken while merged; '.adapter.' filters drop it
MERGED_KEY = 'adapter.merged'


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


def bias_plus_product(bias: Optional[torch.Tensor], left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``bias[:, None] + left @ right`` for batches of matrices, in one ``baddbmm``."""
    return torch.bmm(left, right) if bias is None else torch.baddbmm(bias.view(1, -1, 1), left, right)


class AdaptedLayerMixin:
    """Merge / unmerge shared by the adapted Linear and Conv2d.

    Merging keeps the frozen kernel aside and unmerging puts that very tensor back, so any number
    of merge/unmerge cycles (task switches) leaves the shared weights bit-identical, whatever the
    adapter did meanwhile. The cost is one extra copy of each adapted kernel while merged.
    """

    adapter: Factorization
    merged: bool

    def _attach(self, base: Union[nn.Linear, nn.Conv2d], adapter_cfg: dict) -> None:
        self.weight = base.weight
        self.bias = base.bias
        kwargs = dict(adapter_cfg)
        # get + call rather than build: a build would look for this registry in the default scope
        self.adapter = FACTORIZATIONS.get(kwargs.pop('type'))(weight_shape=base.weight.shape, **kwargs)
        self.adapter.to(device=base.weight.device, dtype=base.weight.dtype)
        self.merged = False
        # a buffer, so that .to() / .cuda() / .half() while merged move it with the weight; not persistent:
        # a state dict holds the weight once
        self.register_buffer('_frozen_weight', None, persistent=False)

    def apply_kernel(self, x: torch.Tensor, kernel: torch.Tensor,
                     bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def apply_adapted_kernel(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """op(x, W + ΔW, b) for a kernel built in this call."""
        return self.apply_kernel(x, kernel, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            if self.training and torch.is_grad_enabled() and any(p.requires_grad for p in self.adapter.parameters()):
                raise RuntimeError(f'training step on a merged {type(self).__name__}: the adapter would get no '
                                   'gradient and train nothing; call unmerge_adapters() before training')
            return self.apply_kernel(x, self.weight, self.bias)
        return self.adapter.adapted_forward(x, self)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.merged:  # the weight already holds ΔW: mark it, so it is never loaded as a frozen weight
            destination[prefix + MERGED_KEY] = torch.tensor(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.merged:
            raise RuntimeError(f'load_state_dict into a merged {type(self).__name__} ({prefix or "root"}): the '
                               'loaded weights would be mixed with the merged ΔW; call unmerge_adapters() first')
        if prefix + MERGED_KEY in state_dict:
            raise RuntimeError(f'{prefix}weight in this state dict was taken while the adapters were merged (it '
                               f'holds W + ΔW, key {prefix + MERGED_KEY}); loading it with the adapter would apply '
                               'ΔW twice. Save after unmerge_adapters(), or load a merged export into a plain model')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def supports_branch(self) -> bool:
        return True

    def low_rank_kernel_applies(self, x: torch.Tensor) -> bool:
        """The low-rank kernels give no gradient to the frozen weight and bias."""
        frozen = not self.weight.requires_grad and (self.bias is None or not self.bias.requires_grad)
        return frozen and self.supports_branch

    def output_positions(self, x: torch.Tensor) -> int:
        """How many output vectors (batch × tokens or pixels) this layer computes for ``x``."""
        raise NotImplementedError

    def low_rank_kernel(self, x, lora_A, lora_B, scaling) -> torch.Tensor:
        raise NotImplementedError

    def low_rank_branch(self, x, lora_A, lora_B, scaling) -> torch.Tensor:
        """Inference's two-layer form op(x, W) + s·B(A(x)) (no dropout, no autograd needed)."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Add ΔW into the frozen kernel, so inference costs exactly a plain layer.

        The frozen bias is left as it is: LoRA's and LoHa's deltas have no bias term (A and B are
        bias-free, Eq. (2)), so ``bias + 0`` is the merged bias.
        """
        if self.merged:
            raise RuntimeError(f'{type(self).__name__} is already merged; call unmerge() first '
                               '(merging twice would add the delta twice)')
        delta = self.adapter.delta_weight()
        if not torch.isfinite(delta).all():
            raise ValueError(f'refusing to merge a non-finite adapter delta into {type(self).__name__} '
                             f'{tuple(self.weight.shape)}: the adapter weights contain NaN or Inf')
        self._frozen_weight = self.weight.data
        self.weight.data = self._frozen_weight + delta.to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put the frozen kernel kept by :meth:`merge` back: bit-identical, not W + ΔW - ΔW."""
        if not self.merged:
            raise RuntimeError(f'{type(self).__name__} is not merged; nothing to unmerge')
        self.weight.data = self._frozen_weight
        self._frozen_weight = None
        self.merged = False


class AdaptedLinear(AdaptedLayerMixin, nn.Linear):

    def __init__(self, base: nn.Linear, adapter_cfg: dict):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device='meta')
        self._attach(base, adapter_cfg)

    def apply_kernel(self, x, kernel, bias=None):
        return F.linear(x, kernel, bias)

    def low_rank_kernel(self, x, lora_A, lora_B, scaling):
        return low_rank_linear(x, self.weight, self.bias, lora_A, lora_B, scaling)

    def low_rank_branch(self, x, lora_A, lora_B, scaling):
        out = F.linear(x, self.weight, self.bias)
        hidden = F.linear(x, lora_A)
        return add_scaled_product_(out.view(1, -1, out.shape[-1]), hidden.view(1, -1, hidden.shape[-1]),
                                   lora_B.t().unsqueeze(0), scaling).view(out.shape)

    def output_positions(self, x):
        return x.numel() // x.shape[-1]


class AdaptedConv2d(AdaptedLayerMixin, nn.Conv2d):
    """Conv LoRA: A is a k×k conv with the frozen conv's geometry, B a 1×1 conv (Eq. (2)).

    A grouped convolution's kernel is adapted as the 2-D matrix (out, in/groups·k²) like any
    other, but the two-conv form does not exist for it, so it trains and runs through the
    fused kernel W + ΔW, which is exactly what the merged layer computes.
    """

    def __init__(self, base: nn.Conv2d, adapter_cfg: dict):
        super().__init__(
            base.in_channels,
            base.out_channels,
            base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            groups=base.groups,
            bias=base.bias is not None,
            padding_mode=base.padding_mode,
            device='meta')
        self._attach(base, adapter_cfg)
        #: a 1×1, stride-1, unpadded, ungrouped conv: a matrix product; decided once, it is asked in every forward
        self.is_pointwise = (self.kernel_size == (1, 1) and self.stride == (1, 1) and self.groups == 1
                             and self.padding in ((0, 0), 'valid'))

    @property
    def supports_branch(self) -> bool:
        return self.groups == 1

    def low_rank_kernel_applies(self, x):
        plain_padding = self.padding_mode == 'zeros' and not isinstance(self.padding, str)
        return plain_padding and super().low_rank_kernel_applies(x)

    def apply_kernel(self, x, kernel, bias=None):
        return self._conv_forward(x, kernel, bias)

    def low_rank_kernel(self, x, lora_A, lora_B, scaling):
        return low_rank_conv2d(x, self.weight, self.bias, lora_A, lora_B, scaling, self.stride, self.padding,
                               self.dilation)

    def low_rank_branch(self, x, lora_A, lora_B, scaling):
        if x.dim() != 4:  # an unbatched input
            return self._conv_forward(x, self.weight, self.bias) + F.conv2d(self._conv_forward(x, lora_A, None),
                                                                            lora_B * scaling)
        rank = lora_A.shape[0]
        up = lora_B.reshape(1, -1, rank).expand(x.shape[0], -1, -1)
        if self.runs_as_matmul(x):
            # B(s·A x) + b first, W x accumulated onto it in place: no pass over the output of its own
            tokens = x.flatten(2)
            low_rank = bias_plus_product(self.bias, up, batched_left_mul(lora_A.reshape(rank, -1) * scaling, tokens))
            return add_scaled_product_(low_rank, self.batched(self.weight, x), tokens, 1.).view(self.output_shape(x))
        out = self._conv_forward(x, self.weight, self.bias)
        hidden = self._conv_forward(x, lora_A, None).flatten(2)
        return add_scaled_product_(out.flatten(2), up, hidden, scaling).view(out.shape)

    def apply_adapted_kernel(self, x, kernel):
        if self.runs_as_matmul(x):
            return bias_plus_product(self.bias, self.batched(kernel, x), x.flatten(2)).view(self.output_shape(x))
        return self._conv_forward(x, kernel, self.bias)

    def runs_as_matmul(self, x) -> bool:
        """CPU inference runs a 1×1 convolution of an NCHW batch as matrix products: oneDNN's pointwise
        conv is slower than a GEMM at EF-L7's sizes, most of all with a kernel built in the call (not
        measured on CUDA, which keeps cuDNN). Traces keep the convolution (FLOPs counters report it by
        operator), autograd too."""
        return (self.is_pointwise and x.device.type == 'cpu' and x.dim() == 4 and x.is_contiguous()
                and not torch.is_grad_enabled() and not torch.jit.is_tracing())

    def batched(self, kernel, x):
        """A 1×1 kernel as the (out, in) matrix in the compute dtype, expanded over x's batch for ``bmm``.
        Cast before expanding: autocast's cast of the expanded kernel would copy it once per sample."""
        kernel = kernel.to(autocast_dtype(x.device.type) or kernel.dtype)
        return kernel.reshape(1, self.out_channels, -1).expand(x.shape[0], -1, -1)

    def output_shape(self, x):
        return (x.shape[0], self.out_channels, *x.shape[2:])

    def output_positions(self, x):
        """Input pixels over the stride: the output size up to the borders."""
        return x.numel() // x.shape[-3] // (self.stride[0] * self.stride[1])


#: mmcv's Linear/Conv2d only add empty-batch handling to the plain layers (mmdet's Swin FFN uses them)
ADAPTABLE_TYPES = {nn.Linear: AdaptedLinear, nn.Conv2d: AdaptedConv2d, MMCVLinear: AdaptedLinear,
                   MMCVConv2d: AdaptedConv2d}


def adapt_layer(name: str, layer: nn.Module, adapter_cfg: dict) -> AdaptedLayerMixin:
    """Wrap one frozen layer; anything but a plain Linear/Conv2d is refused by name."""
    if type(layer) not in ADAPTABLE_TYPES:
        raise TypeError(f'cannot adapt module {name!r} of type {type(layer).__name__}: only plain nn.Linear and '
                        "nn.Conv2d (or mmcv's wrappers of them) are supported; narrow the target patterns")
    try:
        return ADAPTABLE_TYPES[type(layer)](layer, adapter_cfg)
    except ValueError as e:
        raise ValueError(f'cannot adapt module {name!r}: {e}') from e
