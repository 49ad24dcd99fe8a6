"""BatchNorm handling for backbones whose normalisation statistics stay frozen."""
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .modules import replace_module


def freeze_batchnorm_stats(module: nn.Module) -> None:
    """Put every BatchNorm below ``module`` in eval mode, so training never updates its running stats."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that, in eval mode with frozen weights, is the affine map it reduces to.

    ``F.batch_norm`` saves its input for the backward pass even when nothing about the norm
    trains; that input is only needed for the (frozen) weight's gradient. ``x * scale + shift``
    with constant scale and shift saves nothing, which removes one activation per norm from an
    adapted backbone's training memory. Parameters, buffers and state-dict keys are the
    original module's. Without autograd (inference) it is plain BatchNorm, which is as fast; so it is
    in a trace, where FLOPs counters know ``batch_norm`` but not ``addcmul``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keeps_activations = torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing()
        if self.training or self.weight.requires_grad or self.bias.requires_grad or not keeps_activations:
            return super().forward(x)
        with torch.no_grad():
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
        # in x's dtype, as F.batch_norm returns: fp32 constants would promote a bf16 activation to fp32
        return torch.addcmul(shift.to(x.dtype).view(1, -1, 1, 1), x, scale.to(x.dtype).view(1, -1, 1, 1))


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
