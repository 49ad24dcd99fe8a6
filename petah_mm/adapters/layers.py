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
from .factorizations import Factorization, factorization_class
from .same_padding import same_padding_classes

#: the attribute an adapted layer holds its factorization in, hence the prefix of every adapter state-dict key
ADAPTER_ATTR = 'adapter'
#: what every adapter key, and no frozen key, contains: ``<layer>.adapter.<factor>``
ADAPTER_KEY = f'.{ADAPTER_ATTR}.'
#: state-dict key (under the layer's prefix) marking a state dict taken while merged; ADAPTER_KEY filters drop it
MERGED_KEY = f'{ADAPTER_ATTR}.merged'


def is_adapter_key(name: str) -> bool:
    """Whether a parameter or state-dict name belongs to an adapter (the tensors a task owns)."""
    return ADAPTER_KEY in name


def bias_plus_product(bias: Optional[torch.Tensor], left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``bias[:, None] + left @ right`` for batches of matrices, in one ``baddbmm``."""
    return torch.bmm(left, right) if bias is None else torch.baddbmm(bias.view(1, -1, 1), left, right)


class AdaptedLayerMixin:
    """What every factorization shares: merge / unmerge, state-dict marks, dispatch to the factorization.

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
        self.adapter = factorization_class(kwargs.pop('type'))(weight_shape=base.weight.shape, **kwargs)
        self.adapter.to(device=base.weight.device, dtype=base.weight.dtype)
        self.merged = False
        # a buffer, so that .to() / .cuda() / .half() while merged move it with the weight; not persistent:
        # a state dict holds the weight once
        self.register_buffer('_frozen_weight', None, persistent=False)
        self.reset_adapter()

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """Re-initialise the factorization against the frozen kernel: identity with the frozen layer."""
        self.adapter.reset_parameters(self._frozen_weight if self.merged else self.weight)

    def apply_kernel(self, x: torch.Tensor, kernel: torch.Tensor,
                     bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def apply_adapted_kernel(self, x: torch.Tensor, kernel: torch.Tensor, form: Optional[str] = None) -> torch.Tensor:
        """op(x, W + ΔW, b) for a kernel built in this call; ``form``: the LoRA form of this call, where known."""
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

    def output_positions(self, x: torch.Tensor) -> int:
        """How many output vectors (batch × tokens or pixels) this layer computes for ``x``."""
        raise NotImplementedError

    @torch.no_grad()
    def merged_kernel(self) -> torch.Tensor:
        """The kernel merging would write, in the weight's own dtype; ValueError if it is not finite there
        (finite factors whose product overflows, e.g. two of 3e19 in float32). Changes nothing."""
        if self.merged:
            raise RuntimeError(f'{type(self).__name__} is already merged; call unmerge() first '
                               '(merging twice would add the delta twice)')
        merged = self.adapter.merged_weight(self.weight.data).to(self.weight.dtype)
        if not torch.isfinite(merged).all():
            largest = max((p.abs().max().item() for p in self.adapter.parameters() if p.numel()), default=0.)
            raise ValueError(f'non-finite adapter delta for {type(self).__name__} {tuple(self.weight.shape)}: W + ΔW '
                             f'holds NaN or Inf in {self.weight.dtype} (largest factor {largest:.3g})')
        return merged

    @torch.no_grad()
    def commit_merge(self, merged: torch.Tensor) -> None:
        """Put a kernel from :meth:`merged_kernel` in place, keeping the frozen one aside (cannot fail)."""
        self._frozen_weight = self.weight.data
        self.weight.data = merged
        self.merged = True

    def merge(self) -> None:
        """Write the factorization's merged kernel into the weight, so inference costs exactly a plain layer.

        The frozen bias is left as it is: no factorization here adapts a bias (LoRA's A and B are
        bias-free, Eq. (2); DoRA rescales the kernel only), so the merged bias is the frozen one.
        A non-finite kernel is refused before anything changes.
        """
        self.commit_merge(self.merged_kernel())

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

    def output_positions(self, x):
        return x.numel() // x.shape[-1]


class AdaptedConv2d(AdaptedLayerMixin, nn.Conv2d):
    """A frozen Conv2d with a factorized delta; the geometry helpers its factorization's forms use.

    A grouped convolution's kernel is adapted as the 2-D matrix (out, in/groups·k²) like any
    other, but two-layer forms (LoRA's Eq. (2)) do not exist for it (``supports_branch``), so it
    trains and runs through the fused kernel, which is exactly what the merged layer computes.
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

    def apply_kernel(self, x, kernel, bias=None):
        return self._conv_forward(x, kernel, bias)

    def padded_input(self, x):
        """``(x, padding)`` such that ``F.conv2d(x, kernel, bias, stride, padding, dilation)`` is
        :meth:`apply_kernel`: for the low-rank kernels, which take an explicit zero padding."""
        return x, self.padding

    def apply_adapted_kernel(self, x, kernel, form=None):
        if self.runs_as_matmul(x, form):
            return bias_plus_product(self.bias, self.batched(kernel, x), x.flatten(2)).view(self.output_shape(x))
        return self.apply_kernel(x, kernel, self.bias)

    def runs_as_matmul(self, x, form: Optional[str] = None) -> bool:
        """CPU inference runs a 1×1 convolution of an NCHW batch as matrix products, unless a measurement
        on this CPU found oneDNN's convolution faster for this input (a ``*_conv`` form, see
        :mod:`.form_choice`): on the CPUs first measured a GEMM beat oneDNN's pointwise conv at EF-L7's
        sizes; on an AMD EPYC with AVX-512 and native bf16 the convolution mostly won in fp32 (not measured
        on CUDA, which keeps cuDNN). Traces keep the convolution (FLOPs counters report it by operator),
        autograd too. ``form``: this call's LoRA form where the caller looked it up, else it is looked up here."""
        if not (self.is_pointwise and x.device.type == 'cpu' and x.dim() == 4 and x.is_contiguous()
                and not torch.is_grad_enabled() and not torch.jit.is_tracing()):
            return False
        if form is None:
            measured_form = getattr(self.adapter, 'measured_form', None)  # LoRA's: the factorization with forms
            form = (measured_form and measured_form(x, self.output_positions(x))) or ''
        return not form.endswith('_conv')

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


class AdaptedSamePaddingConv2d(AdaptedConv2d):
    """A frozen Conv2d whose forward pads its input for TF "same" padding (timm's ``Conv2dSame``, mmcv's
    ``Conv2dAdaptivePadding``), with a factorized delta.

    The input is padded by the frozen class's own function (:mod:`.same_padding`), and every kernel runs
    unpadded on the padded input: W, W + ΔW and LoRA's k×k A, which has the frozen kernel's size and so
    needs the very same pad. The layer's own ``padding`` is 0, as in the classes it adapts.
    """

    def __init__(self, base: nn.Conv2d, adapter_cfg: dict):
        super().__init__(base, adapter_cfg)
        #: the frozen class's input padding; the state dict holds weight and bias only, as the frozen class's
        self.pad_input = same_padding_classes()[type(base)]

    def apply_kernel(self, x, kernel, bias=None):
        x = self.pad_input(x, kernel.shape[-2:], self.stride, self.dilation)
        return F.conv2d(x, kernel, bias, self.stride, self.padding, self.dilation, self.groups)

    def padded_input(self, x):
        return self.pad_input(x, self.kernel_size, self.stride, self.dilation), self.padding

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, same_padding={self.pad_input.__name__}'


#: mmcv's Linear/Conv2d only add empty-batch handling to the plain layers (mmdet's Swin FFN uses them)
PLAIN_TYPES = {nn.Linear: AdaptedLinear, nn.Conv2d: AdaptedConv2d, MMCVLinear: AdaptedLinear,
               MMCVConv2d: AdaptedConv2d}


def adapted_class(layer: nn.Module) -> Optional[type]:
    """The adapted twin of ``layer``'s exact class, or None where petah_mm does not know its forward: plain
    layers, and the same-padding convolutions, which only pad the input in theirs (:mod:`.same_padding`)."""
    if type(layer) in PLAIN_TYPES:
        return PLAIN_TYPES[type(layer)]
    return AdaptedSamePaddingConv2d if type(layer) in same_padding_classes() else None


def adapt_layer(name: str, layer: nn.Module, adapter_cfg: dict) -> AdaptedLayerMixin:
    """Wrap one frozen layer; a subclass whose forward petah_mm does not know is refused by name."""
    cls = adapted_class(layer)
    if cls is None:
        raise TypeError(f'cannot adapt module {name!r} of type {type(layer).__name__}: petah_mm adapts plain '
                        "nn.Linear and nn.Conv2d, mmcv's wrappers of them and the TF 'same' padding convolutions "
                        "(timm's Conv2dSame, mmcv's Conv2dAdaptivePadding), whose forward it knows; narrow the "
                        'target patterns')
    try:
        return cls(layer, adapter_cfg)
    except ValueError as e:
        raise ValueError(f'cannot adapt module {name!r}: {e}') from e
