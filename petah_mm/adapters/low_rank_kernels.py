"""Training kernels for a frozen layer plus a LoRA delta: y = op(x, W + s·B·A).

The forward runs the frozen layer once with the effective kernel W + ΔW, so it costs what the
plain layer costs. The backward computes the input gradient through that kernel, and the
gradients of A and B from thin products with r channels in between. Compared with the paper's
unmerged form, op(x, W) + B(A(x)), this skips two full-size tensors per layer (B's output and the
sum) and the thin r-channel convolutions, which CPU convolution libraries run far below their
speed; compared with autograd through op(x, W + ΔW), it skips the full weight-gradient product
that only ΔW's factors need in rank-r form. Nothing but x is saved; W + ΔW is rebuilt in backward.

Gradients (h = A·x, gh = (s·B)ᵀ·g, summed over batch and positions):
``dx = (W + ΔW)ᵀ·g``, ``dA = gh·xᵀ``, ``dB = s·g·hᵀ``.
"""
import torch
import torch.nn.functional as F

from .factorizations import lora_delta

# aten's convolution backward with the real input: torch.nn.grad's wrappers pass a zero-stride
# stand-in, which sends oneDNN through a slower path with an extra copy of the gradient.
conv_backward = torch.ops.aten.convolution_backward


def batched_left_mul(matrix, batch):
    """matrix @ batch[i] for each i, without the transposed copy of ``batch`` that
    ``torch.matmul(matrix, batch)`` makes to fold the batch into one product."""
    return torch.bmm(matrix.expand(batch.shape[0], *matrix.shape), batch)


def effective_kernel(weight, lora_A, lora_B, scaling):
    return weight + lora_delta(lora_A, lora_B, scaling, weight.shape)


class LowRankLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling):
        ctx.save_for_backward(x, weight, lora_A, lora_B)
        ctx.scaling = scaling
        return F.linear(x, effective_kernel(weight, lora_A, lora_B, scaling), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_A, lora_B = ctx.saved_tensors
        s = ctx.scaling
        grad_x = grad @ effective_kernel(weight, lora_A, lora_B, s) if ctx.needs_input_grad[0] else None
        x2, g2 = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
        grad_A = (g2 @ (lora_B * s)).t() @ x2
        grad_B = s * (g2.t() @ (x2 @ lora_A.t()))
        return grad_x, None, None, grad_A, grad_B, None


class LowRankConv2d(torch.autograd.Function):
    """For an ungrouped, zero-padded conv; A is k×k with the conv's geometry, B is 1×1."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling, stride, padding, dilation):
        ctx.save_for_backward(x, weight, lora_A, lora_B)
        ctx.scaling, ctx.geometry = scaling, (stride, padding, dilation)
        return F.conv2d(x, effective_kernel(weight, lora_A, lora_B, scaling), bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_A, lora_B = ctx.saved_tensors
        s, (stride, padding, dilation) = ctx.scaling, ctx.geometry
        grad_x = None
        if ctx.needs_input_grad[0]:
            kernel = effective_kernel(weight, lora_A, lora_B, s)
            grad_x = conv_backward(grad, x, kernel, None, stride, padding, dilation, False, (0, 0), 1,
                                   (True, False, False))[0]
        n, rank = x.shape[0], lora_A.shape[0]
        g = grad.flatten(2)  # (n, out, positions)
        gh = batched_left_mul((lora_B.reshape(-1, rank) * s).t(), g)  # (n, r, positions)
        pointwise = lora_A.shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0)
        if pointwise:  # thin matrix products: far faster than r-channel convolutions on CPU
            x_flat = x.flatten(2)
            # x stays in its layout, only the r-channel operand is transposed
            grad_A = (x_flat @ gh.transpose(1, 2)).sum(0).t().reshape(lora_A.shape)
            h = batched_left_mul(lora_A.reshape(rank, -1), x_flat)
        else:
            grad_A = conv_backward(gh.reshape(n, rank, *grad.shape[2:]), x, lora_A, None, stride, padding, dilation,
                                   False, (0, 0), 1, (False, True, False))[1]
            h = F.conv2d(x, lora_A, None, stride, padding, dilation).flatten(2)
        grad_B = s * (g @ h.transpose(1, 2)).sum(0).reshape(lora_B.shape)
        return grad_x, None, None, grad_A, grad_B, None, None, None, None
