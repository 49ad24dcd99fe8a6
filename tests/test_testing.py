"""The shared test pieces themselves: petah_mm.testing.randomise_adapters, and the scaled comparison every
numerical test uses (it must pass on rounding, fail on a real difference, and say by how much)."""
import pytest
import torch
from torch import nn

from petah_mm.adapters import adapted_layers, is_adapter_key
from petah_mm.testing import randomise_adapters
from helpers import assert_close_scaled, reduction_length
from helpers.toy_backbone import ToyHybrid


def test_randomise_adapters_is_seeded_and_touches_only_the_adapters():
    first, second = ToyHybrid(dict(method='petah', conv_rank=2)), ToyHybrid(dict(method='petah', conv_rank=2))
    second.load_state_dict(first.state_dict())
    frozen = {k: v.clone() for k, v in first.state_dict().items() if not is_adapter_key(k)}
    state = torch.random.get_rng_state()
    for model in (first, second):
        randomise_adapters(model, seed=3, std=0.1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    factors = [p for layer in adapted_layers(first).values() for p in layer.adapter.parameters()]
    assert factors and all(p.abs().min() > 0 and 0.05 < p.std() < 0.2 for p in factors if p.numel() > 8)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in frozen.items())
    other = randomise_adapters(ToyHybrid(dict(method='petah', conv_rank=2)), seed=4, std=0.1)
    stem = [adapted_layers(model)['stem.0'].adapter.lora_A for model in (first, other)]
    assert not torch.equal(*stem)


def test_scaled_comparison_accepts_another_summation_order_and_reports_a_real_difference():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(4096, 64)
    x = torch.randn(8, 4096, generator=g) * 30
    reference = layer(x).detach()
    reordered = (x.double() @ layer.weight.double().t() + layer.bias.double()).float().detach()  # exact, then rounded
    assert_close_scaled(reordered, reference, reduction_length(layer))
    wrong = reference.clone()
    wrong[3, 5] += 1e-3 * reference.abs().max()  # far above rounding, far below the values themselves
    with pytest.raises(AssertionError, match=r'wrong: 1 of 512 elements differ by more than the tolerance; largest '
                                             r'difference [\d.e+-]+ > tolerance [\d.e+-]+ \(= 8 ulps'):
        assert_close_scaled(wrong, reference, reduction_length(layer), msg='wrong')
