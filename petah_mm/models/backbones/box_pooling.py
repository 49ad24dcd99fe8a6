"""The pooling token mixer of EfficientFormer and PoolFormer, pool(x) - x, as a depthwise box filter on the CPU.

mmpretrain's and timm's ``Pooling`` run ``AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)``. On the
CPU, torch's NCHW average-pooling kernel is far slower than oneDNN's depthwise convolution: with it, the plain
EF-L7 ran 1.08-1.20x slower at batch 1 in fp32 and 1.13-1.24x in bf16 (docs/benchmarks.md, "The pooling token
mixer"). Its autograd also keeps the input, which a box filter's backward does not need. Here the window sums come
from a depthwise convolution with a kernel of ones, and the division by the pixels inside each window
(fewer at the borders) is a multiplication by a constant map. The filter is symmetric, so its backward is
the same filter on the scaled gradient. Same result up to rounding; no parameters, no state-dict keys.
"""
import functools

import timm.models.efficientformer
import timm.models.metaformer
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import poolformer
from mmpretrain.models.backbones.efficientformer import Pooling
from torch import nn

from petah_mm.adapters.form_choice import tracing_or_compiling
from petah_mm.utils.modules import replace_module

#: the token mixers that compute ``AvgPool2d(k, 1, k // 2, count_include_pad=False)(x) - x`` with their ``pool``:
#: mmpretrain's EfficientFormer and PoolFormer, timm's EfficientFormer and MetaFormer (PoolFormer v1 and v2)
POOLING_CLASSES = (Pooling, poolformer.Pooling, timm.models.efficientformer.Pooling, timm.models.metaformer.Pooling)


@functools.lru_cache(maxsize=64)
def box_constants(channels: int, size: int, height: int, width: int, dtype: torch.dtype, device: torch.device):
    """The depthwise kernel of ones and 1 / (pixels inside each window), (1, 1, height, width). Normal tensors
    even when first asked inside ``torch.inference_mode``: a later double backward saves the scale map."""
    with torch.inference_mode(False), torch.no_grad():
        radius = size // 2

        def inside(length):
            index = torch.arange(length, device=device)
            return (index + radius).clamp(max=length - 1) - (index - radius).clamp(min=0) + 1

        count = inside(height)[:, None] * inside(width)[None, :]
        ones = torch.ones(channels, 1, size, size, dtype=dtype, device=device)
        return ones, count.to(torch.float64).reciprocal().to(dtype).view(1, 1, height, width)


def box_average(x: torch.Tensor, size: int) -> torch.Tensor:
    """The average over each size×size window's pixels inside the map, in x's dtype (autocast off: the
    pooling it replaces runs in its input's dtype)."""
    ones, inverse_count = box_constants(x.shape[1], size, x.shape[2], x.shape[3], x.dtype, x.device)
    with torch.autocast(x.device.type, enabled=False):
        return F.conv2d(x, ones, None, 1, size // 2, 1, x.shape[1]).mul_(inverse_count)


class BoxPoolingMinusInput(torch.autograd.Function):
    """box_average(x) - x, saving nothing for backward: dx = box_average's transpose (itself, as the
    window is symmetric, with the scale applied first) of the gradient, minus the gradient."""

    @staticmethod
    def forward(ctx, x, size):
        ctx.size = size
        return box_average(x, size).sub_(x)

    @staticmethod
    def backward(ctx, grad):
        ones, inverse_count = box_constants(grad.shape[1], ctx.size, grad.shape[2], grad.shape[3], grad.dtype,
                                            grad.device)
        with torch.autocast(grad.device.type, enabled=False):
            summed = F.conv2d(grad * inverse_count, ones, None, 1, ctx.size // 2, 1, grad.shape[1])
        return summed.sub_(grad), None


class BoxPooling(Pooling):
    """A pooling token mixer (mmpretrain's EfficientFormer ``Pooling`` and its twins) computed by
    :class:`BoxPoolingMinusInput` on the CPU.

    CUDA, traces and compiled graphs keep ``AvgPool2d`` (ONNX exports and tracing FLOPs counters see the
    operator they know; not measured on CUDA), as do even window sizes, whose output is one pixel larger.
    ``torch.fx`` symbolic tracing and ``torch.func`` transforms are not supported on the CPU path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.pool.kernel_size
        odd = isinstance(size, int) and size % 2 == 1
        if x.device.type != 'cpu' or x.dim() != 4 or not odd or tracing_or_compiling():
            return super().forward(x)
        return BoxPoolingMinusInput.apply(x, size)


def box_pooling_twin(module: nn.Module):
    """A :class:`BoxPooling` computing what ``module`` computes, or None where it is no pooling token mixer of
    POOLING_CLASSES whose ``pool`` has the geometry above (a subclass, or a pool changed after construction)."""
    pool = getattr(module, 'pool', None)
    if type(module) not in POOLING_CLASSES or type(pool) is not nn.AvgPool2d:
        return None
    size = pool.kernel_size
    if not (isinstance(size, int) and size % 2 == 1 and pool.stride in (1, (1, 1))
            and pool.padding in (size // 2, (size // 2, size // 2)) and not pool.count_include_pad
            and not pool.ceil_mode and pool.divisor_override is None):
        return None
    return BoxPooling(size).train(module.training)


def convert_pooling_token_mixers(model: nn.Module) -> int:
    """Swap each pooling token mixer below ``model`` that :class:`BoxPooling` computes exactly for one; how many."""
    twins = {name: box_pooling_twin(m) for name, m in model.named_modules() if name}
    for name, twin in twins.items():
        if twin is not None:
            replace_module(model, name, twin)
    return sum(twin is not None for twin in twins.values())
