"""LoRA's math and training kernels for a frozen layer plus a LoRA delta: y = op(x, W + s·B·A).

The forward runs the frozen layer once with the effective kernel W + ΔW, so it costs what the
plain layer costs. The backward computes the input gradient through that kernel, and the
gradients of A and B from thin products with r channels in between. Compared with the paper's
unmerged form, op(x, W) + B(A(x)), this skips two full-size tensors per layer (B's output and the
sum) and the thin r-channel convolutions, which CPU convolution libraries run far below their
speed; compared with autograd through op(x, W + ΔW), it skips the full weight-gradient product
that only ΔW's factors need in rank-r form. Nothing but x is saved; W + ΔW is rebuilt in backward.

Gradients (h = A·x, gh = (s·B)ᵀ·g, summed over batch and positions):
``dx = (W + ΔW)ᵀ·g``, ``dA = gh·xᵀ``, ``dB = s·g·hᵀ``.

Mixed precision: under autocast the kernels compute in autocast's dtype (bf16 or fp16), as the
plain layer would, and save x in that dtype; W, A and B stay fp32 master weights and get fp32
gradients. Each device type gets its own subclass decorated with ``custom_fwd``/``custom_bwd``
(:func:`for_device`), because those decorators bind one device type.
"""
import functools

import torch
import torch.nn.functional as F

from .autocast import autocast_dtype, custom_bwd, custom_fwd

# aten's convolution backward with the real input: torch.nn.grad's wrappers pass a zero-stride
# stand-in, which sends oneDNN through a slower path with an extra copy of the gradient.
conv_backward = torch.ops.aten.convolution_backward


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


def batched_left_mul(matrix, batch):
    """matrix @ batch[i] for each i, without the transposed copy of ``batch`` that
    ``torch.matmul(matrix, batch)`` makes to fold the batch into one product."""
    return torch.bmm(matrix.expand(batch.shape[0], *matrix.shape), batch)


def pointwise_factor_grads(x, g, a2d, up):
    """A's gradient and ``g·hᵀ`` (h = A·x) of a 1×1 layer, from thin matrix products with r channels between:
    far faster than r-channel convolutions on CPU. x (n, in, positions), g (n, out, positions), a2d (r, in);
    ``up`` (out, r) is what maps h to the output (s·B, and any per-channel scale after the layer)."""
    gh = batched_left_mul(up.t(), g)  # (n, r, positions)
    grad_A = (x @ gh.transpose(1, 2)).sum(0).t()  # x stays in its layout, only the r-channel operand is transposed
    h = batched_left_mul(a2d, x)
    return grad_A, (g @ h.transpose(1, 2)).sum(0)


def effective_kernel(weight, lora_A, lora_B, scaling, dtype):
    """W + ΔW in the compute dtype; under autocast built in it too, as the plain layer casts its W."""
    return lora_kernel(weight, lora_A, lora_B, scaling).to(dtype)


def start(ctx, x, weight, lora_A, lora_B, scaling):
    """Record the compute dtype and save x in it; returns the cast x."""
    dtype = autocast_dtype(x.device.type) or x.dtype
    ctx.scaling, ctx.input_dtype = scaling, x.dtype
    x = x.to(dtype)
    ctx.save_for_backward(x, weight, lora_A, lora_B)
    return x


def cast(tensor, dtype):
    return None if tensor is None else tensor.to(dtype)


class LowRankLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling):
        x = start(ctx, x, weight, lora_A, lora_B, scaling)
        return F.linear(x, effective_kernel(weight, lora_A, lora_B, scaling, x.dtype), cast(bias, x.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_A, lora_B = ctx.saved_tensors
        s, dtype = ctx.scaling, x.dtype
        grad = grad.to(dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ effective_kernel(weight, lora_A, lora_B, s, dtype)).to(ctx.input_dtype)
        x2, g2 = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
        grad_A = (g2 @ (lora_B * s).to(dtype)).t() @ x2
        grad_B = s * (g2.t() @ (x2 @ lora_A.to(dtype).t()))
        return grad_x, None, None, grad_A.to(lora_A.dtype), grad_B.to(lora_B.dtype), None


class LowRankConv2d(torch.autograd.Function):
    """For an ungrouped, zero-padded conv; A is k×k with the conv's geometry, B is 1×1."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling, stride, padding, dilation):
        x = start(ctx, x, weight, lora_A, lora_B, scaling)
        ctx.geometry = stride, padding, dilation
        kernel = effective_kernel(weight, lora_A, lora_B, scaling, x.dtype)
        return F.conv2d(x, kernel, cast(bias, x.dtype), stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_A, lora_B = ctx.saved_tensors
        s, dtype, (stride, padding, dilation) = ctx.scaling, x.dtype, ctx.geometry
        grad = grad.to(dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            kernel = effective_kernel(weight, lora_A, lora_B, s, dtype)
            grad_x = conv_backward(grad, x, kernel, None, stride, padding, dilation, False, (0, 0), 1,
                                   (True, False, False))[0].to(ctx.input_dtype)
        n, rank = x.shape[0], lora_A.shape[0]
        a = lora_A.to(dtype)
        g = grad.flatten(2)  # (n, out, positions)
        up = (lora_B.reshape(-1, rank) * s).to(dtype)
        if lora_A.shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0):
            grad_A, grad_up = pointwise_factor_grads(x.flatten(2), g, a.reshape(rank, -1), up)
        else:
            gh = batched_left_mul(up.t(), g)  # (n, r, positions)
            grad_A = conv_backward(gh.reshape(n, rank, *grad.shape[2:]), x, a, None, stride, padding, dilation,
                                   False, (0, 0), 1, (False, True, False))[1]
            grad_up = (g @ F.conv2d(x, a, None, stride, padding, dilation).flatten(2).transpose(1, 2)).sum(0)
        grad_B = s * grad_up.reshape(lora_B.shape)
        return grad_x, None, None, grad_A.reshape(lora_A.shape).to(lora_A.dtype), grad_B.to(lora_B.dtype), None, \
            None, None, None


@functools.lru_cache(maxsize=None)
def for_device(function, device_type: str):
    """``function`` with forward and backward under ``custom_fwd``/``custom_bwd`` for ``device_type``."""
    return type(function.__name__, (function, ), dict(
        forward=staticmethod(custom_fwd(device_type)(function.forward)),
        backward=staticmethod(custom_bwd(device_type)(function.backward))))


def low_rank_linear(x, weight, bias, lora_A, lora_B, scaling):
    return for_device(LowRankLinear, x.device.type).apply(x, weight, bias, lora_A, lora_B, scaling)


def low_rank_conv2d(x, weight, bias, lora_A, lora_B, scaling, stride, padding, dilation):
    return for_device(LowRankConv2d, x.device.type).apply(x, weight, bias, lora_A, lora_B, scaling, stride, padding,
                                                          dilation)
