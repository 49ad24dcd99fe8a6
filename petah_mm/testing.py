"""What the test suite and the self-check tools share: training-like adapter values.

Freshly injected adapters are the identity (one factor is zero), so a merge, an export or a switch
between tasks would look right whatever it did. ``randomise_adapters`` gives every factor seeded
random values instead, as a trained adapter would have.
"""
import torch
from torch import nn

from .adapters import adapted_layers


@torch.no_grad()
def randomise_adapters(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every factor of every adapted layer below ``model`` (``model`` itself included) with
    ``N(0, std²)`` values drawn from a generator seeded with ``seed``; the global RNG is left alone."""
    generator = torch.Generator().manual_seed(seed)
    for layer in adapted_layers(model).values():
        for factor in layer.adapter.parameters():
            factor.copy_(torch.randn(factor.shape, generator=generator).to(factor) * std)
    return model
