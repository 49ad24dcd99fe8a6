"""BatchNorm handling shared by backbones that freeze normalisation statistics."""
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def freeze_batchnorm_stats(module: nn.Module) -> None:
    """Put every BatchNorm below ``module`` in eval mode, so training never updates its running stats."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
