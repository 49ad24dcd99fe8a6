"""mmpretrain's ConvMlp (1×1 conv → BatchNorm → GELU → 1×1 conv → BatchNorm, EfficientFormer's Meta4D MLP)
trained as one autograd function when both convs carry LoRA and both norms are frozen.

Layer by layer, autograd keeps three activations per MLP for backward: the input (for fc1's A and B), the
GELU's input (for its derivative) and the GELU's output (for fc2's A and B). :class:`LowRankConvMlpFunction`
keeps the first two and recomputes the GELU's output in backward, one elementwise pass: a third less
activation memory in the MLPs, which hold most of an EfficientFormer's. Each frozen norm is an affine map per
channel, so it is folded into its conv's effective kernel and bias, s·(W + ΔW) and s·b + t: the norms run no
pass of their own, forward or backward. Only a frozen trunk allows either: what a peer LoRA library, which
adapts layer by layer, cannot do.
"""
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.efficientformer import ConvMlp
from torch import nn

from ..utils import FrozenBatchNorm2d
from ..utils.modules import replace_module
from .autocast import autocast_dtype
from .form_choice import tracing_or_compiling
from .layers import AdaptedConv2d
from .lora import LoRA
from .low_rank_kernels import conv_backward, for_device, lora_kernel, pointwise_factor_grads


def folded_norm(norm: FrozenBatchNorm2d):
    """The frozen norm as y = scale·x + shift, per channel."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


def folded_conv(weight, bias, lora_A, lora_B, scaling, norm_scale, norm_shift, dtype):
    """Kernel and bias of norm(conv(x, W + ΔW, b)) as one conv, in the compute dtype."""
    kernel = lora_kernel(weight, lora_A, lora_B, scaling) * norm_scale.view(-1, 1, 1, 1)
    shift = norm_shift if bias is None else torch.addcmul(norm_shift, bias, norm_scale)
    return kernel.to(dtype), shift.to(dtype)


def factor_grads(x, grad, conv, dtype):
    """A's and B's gradients of a folded 1×1 conv (its arguments as :func:`folded_conv` takes them) from the
    gradient at the norm's output."""
    _, _, lora_A, lora_B, scaling, norm_scale, _ = conv
    rank, out_scale = lora_A.shape[0], norm_scale.view(-1, 1) * scaling
    grad_A, grad_up = pointwise_factor_grads(x.flatten(2), grad.flatten(2), lora_A.reshape(rank, -1).to(dtype),
                                             (lora_B.reshape(-1, rank) * out_scale).to(dtype))
    grad_B = grad_up * out_scale
    return grad_A.reshape(lora_A.shape).to(lora_A.dtype), grad_B.reshape(lora_B.shape).to(lora_B.dtype)


def pointwise_input_grad(grad, x, kernel):
    return conv_backward(grad, x, kernel, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (True, False, False))[0]


class LowRankConvMlpFunction(torch.autograd.Function):
    """norm2(fc2(gelu(norm1(fc1(x))))) with LoRA on fc1 and fc2 and both norms frozen; saves x and the GELU's
    input. Each conv comes as its weight, bias, A, B, scaling, norm scale and norm shift. Under autocast it
    computes in autocast's dtype, as :mod:`.low_rank_kernels` does."""

    @staticmethod
    def forward(ctx, x, approximate, *convs):
        dtype = autocast_dtype(x.device.type) or x.dtype
        ctx.input_dtype, ctx.approximate, ctx.scalings = x.dtype, approximate, convs[4::7]
        x = x.to(dtype)
        hidden = F.conv2d(x, *folded_conv(*convs[:7], dtype))
        ctx.save_for_backward(x, hidden, *convs[:4], *convs[5:11], *convs[12:])
        return F.conv2d(F.gelu(hidden, approximate=approximate), *folded_conv(*convs[7:], dtype))

    @staticmethod
    def backward(ctx, grad):
        x, hidden, *saved = ctx.saved_tensors
        dtype, needs = x.dtype, ctx.needs_input_grad
        first, second = ((*saved[i:i + 4], scaling, *saved[i + 4:i + 6]) for i, scaling in zip((0, 6), ctx.scalings))
        grad = grad.to(dtype)
        activation = F.gelu(hidden, approximate=ctx.approximate)  # recomputed: not kept between the passes
        grad_activation = pointwise_input_grad(grad, activation, folded_conv(*second, dtype)[0])
        grads2 = factor_grads(activation, grad, second, dtype) if needs[11] or needs[12] else (None, None)
        # into the recomputed activation's memory: a fresh tensor this size costs page faults as well as its pass
        grad_hidden = torch.ops.aten.gelu_backward.grad_input(grad_activation, hidden, approximate=ctx.approximate,
                                                              grad_input=activation)
        del grad_activation, activation
        grad_x = None
        if needs[0]:
            grad_x = pointwise_input_grad(grad_hidden, x, folded_conv(*first, dtype)[0]).to(ctx.input_dtype)
        grads1 = factor_grads(x, grad_hidden, first, dtype) if needs[4] or needs[5] else (None, None)
        return (grad_x, None, None, None, *grads1, None, None, None, None, None, *grads2, None, None, None)


def conv_args(conv: AdaptedConv2d, norm: FrozenBatchNorm2d) -> tuple:
    lora = conv.adapter
    return (conv.weight, conv.bias, lora.lora_A, lora.lora_B, lora.scaling, *folded_norm(norm))


def trains_as_lora_kernel(conv) -> bool:
    """An unmerged 1×1 LoRA conv that would take the low-rank training kernel (no ablation form forced)."""
    return (type(conv) is AdaptedConv2d and conv.is_pointwise and not conv.merged and type(conv.adapter) is LoRA
            and 'adapted_forward' not in vars(conv.adapter) and conv.adapter.kernel_applies(conv))


def frozen_norm(norm) -> bool:
    return (isinstance(norm, FrozenBatchNorm2d) and not norm.training and not norm.weight.requires_grad
            and not norm.bias.requires_grad)


class LowRankConvMlp(ConvMlp):
    """A ConvMlp that trains through :class:`LowRankConvMlpFunction` where it is exact, else as ConvMlp does.
    ``fuse_training = False`` keeps the layer-by-layer path (the benchmark's ablation)."""

    fuse_training = True

    def fuses(self, x: torch.Tensor) -> bool:
        return (self.fuse_training and self.training and torch.is_grad_enabled() and not tracing_or_compiling()
                and x.dim() == 4 and type(self.act) is nn.GELU and (self.drop.p == 0 or not self.drop.training)
                and trains_as_lora_kernel(self.fc1) and trains_as_lora_kernel(self.fc2)
                and frozen_norm(self.norm1) and frozen_norm(self.norm2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fuses(x):
            return super().forward(x)
        function = for_device(LowRankConvMlpFunction, x.device.type)
        return function.apply(x, self.act.approximate, *conv_args(self.fc1, self.norm1),
                              *conv_args(self.fc2, self.norm2))


def convert_conv_mlps(module: nn.Module) -> int:
    """Make each ConvMlp below ``module`` a :class:`LowRankConvMlp` with the same children (same state dict)."""
    targets = [name for name, m in module.named_modules() if type(m) is ConvMlp]
    for name in targets:
        old = module.get_submodule(name)
        new = LowRankConvMlp.__new__(LowRankConvMlp)
        new.__dict__.update(old.__dict__)
        replace_module(module, name, new)
    return len(targets)
