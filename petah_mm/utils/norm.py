"""BatchNorm handling for backbones whose normalisation statistics stay frozen."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .modules import replace_module


def freeze_batchnorm_stats(module: nn.Module) -> None:
    """Put every BatchNorm below ``module`` in eval mode, so training never updates its running stats."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


class FrozenAffine(torch.autograd.Function):
    """Eval-mode ``F.batch_norm`` that saves only its per-channel scale for backward, not its input.

    The forward runs aten's batch-norm kernel: in bf16 on CPU, ``torch.addcmul`` with per-channel operands
    broadcast over N, H and W runs a slow path (an EF-L7 bf16 training step spent 454 ms of one thread in
    its 65 norms, batch_norm's kernel 97 ms). The backward is grad · scale.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, eps):
        ctx.save_for_backward(weight * (running_var + eps).rsqrt())
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0., eps)

    @staticmethod
    def backward(ctx, grad):
        scale, = ctx.saved_tensors
        return grad * scale.to(grad.dtype).view(1, -1, 1, 1), None, None, None, None, None


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that, in eval mode with frozen weights, keeps no activation for backward.

    ``F.batch_norm`` saves its input for the backward pass even when nothing about the norm
    trains; that input is only needed for the (frozen) weight's gradient. :class:`FrozenAffine`
    computes the same output and saves only the per-channel scale, which removes one activation
    per norm from an adapted backbone's training memory. Parameters, buffers and state-dict keys
    are the original module's. Without autograd (inference) and in a trace (FLOPs counters know
    ``batch_norm``, not a custom function) it is plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keeps_activations = torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing()
        if self.training or self.weight.requires_grad or self.bias.requires_grad or not keeps_activations:
            return super().forward(x)
        return FrozenAffine.apply(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)


def convert_frozen_batchnorm(module: nn.Module) -> int:
    """Swap each affine ``nn.BatchNorm2d`` below ``module`` for a :class:`FrozenBatchNorm2d` twin."""
    targets = [name for name, m in module.named_modules() if type(m) is nn.BatchNorm2d and m.affine
               and m.track_running_stats]
    for name in targets:
        old = module.get_submodule(name)
        new = FrozenBatchNorm2d(old.num_features, old.eps, old.momentum, device='meta')
        new.weight, new.bias = old.weight, old.bias
        for buffer in ('running_mean', 'running_var', 'num_batches_tracked'):
            setattr(new, buffer, getattr(old, buffer))
        new.train(old.training)
        replace_module(module, name, new)
    return len(targets)


class NormEvalMixin:
    """``train()`` that keeps BatchNorm statistics frozen while ``self.norm_eval`` is set."""

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and getattr(self, 'norm_eval', False):
            freeze_batchnorm_stats(self)
        return self
