"""Layer-level math of the adapters: Eq. (2) of the paper, merge, unmerge, grouped convs, LoHa."""
import functools

import pytest
import torch
from torch import nn

from petah_mm.adapters import FACTORIZATIONS, AdaptedConv2d, AdaptedLinear, adapt_layer
from petah_mm.testing import randomise_adapters

#: every adapter factor random, of order one, so the delta is not the zero of the init
randomise = functools.partial(randomise_adapters, std=0.5)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


CONV_CASES = [
    dict(in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=2, dilation=2),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 5), stride=(1, 2), padding=(1, 2)),
    dict(in_channels=3, out_channels=8, kernel_size=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, padding_mode='reflect'),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2, padding_mode='circular'),
    dict(in_channels=6, out_channels=4, kernel_size=3, padding=1, groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6, bias=False),
]


@pytest.mark.parametrize('factorization', sorted(FACTORIZATIONS.module_dict))
@pytest.mark.parametrize('conv_kwargs', CONV_CASES)
def test_conv_merge_equals_unmerged(conv_kwargs, factorization):
    base = nn.Conv2d(**conv_kwargs)
    # eval: a merged layer does not train
    layer = randomise(adapt_layer('conv', base, dict(type=factorization, rank=2, alpha=3.))).eval()
    x = torch.randn(2, conv_kwargs['in_channels'], 37, 53)
    original = base.weight.detach().clone()
    unmerged = layer(x)
    layer.merge()
    merged = layer(x)
    assert rel_err(merged, unmerged) <= 1e-5
    # the merged layer is a plain conv with the new kernel
    plain = nn.Conv2d(**conv_kwargs)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith('adapter.')})
    assert torch.equal(plain(x), merged)
    layer.unmerge()
    torch.testing.assert_close(layer.weight, original, rtol=0, atol=1e-6)
    assert rel_err(layer(x), unmerged) <= 1e-6


@pytest.mark.parametrize('factorization', sorted(FACTORIZATIONS.module_dict))
def test_linear_merge_equals_unmerged(factorization):
    base = nn.Linear(19, 23)
    layer = randomise(adapt_layer('fc', base, dict(type=factorization, rank=4))).eval()  # merged: no training
    x = torch.randn(3, 11, 19)
    unmerged = layer(x)
    layer.merge()
    assert rel_err(layer(x), unmerged) <= 1e-5


def test_conv_lora_delta_is_reshaped_B2D_times_A2D():
    base = nn.Conv2d(5, 7, 3, stride=2, padding=2, dilation=2)
    layer = randomise(adapt_layer('conv', base, dict(type='lora', rank=2, alpha=6.)))
    A, B = layer.adapter.lora_A, layer.adapter.lora_B
    assert A.shape == (2, 5, 3, 3) and B.shape == (7, 2, 1, 1)  # k×k conv to r, 1×1 conv back
    expected = torch.zeros(7, 5 * 9)
    for i in range(7):  # ΔW2D[i, j] = Σ_r B2D[i, r] A2D[r, j], written out
        for r in range(2):
            expected[i] += B[i, r, 0, 0] * A[r].flatten()
    expected = expected.reshape(7, 5, 3, 3) * (6. / 2)
    torch.testing.assert_close(layer.adapter.delta_weight(layer.weight), expected, rtol=1e-6, atol=1e-6)


def test_conv_lora_branch_is_two_convs_with_frozen_geometry():
    """Eq. (2): conv2D(conv2D(x, A), B), A using the frozen conv's stride/padding/dilation/padding mode."""
    base = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, padding_mode='replicate', bias=False)
    layer = randomise(adapt_layer('conv', base, dict(type='lora', rank=2)))
    x = torch.randn(1, 4, 37, 53)
    conv_a = nn.Conv2d(4, 2, 3, stride=2, padding=2, dilation=2, padding_mode='replicate', bias=False)
    conv_b = nn.Conv2d(2, 6, 1, bias=False)
    conv_a.weight.data.copy_(layer.adapter.lora_A)
    conv_b.weight.data.copy_(layer.adapter.lora_B)
    torch.testing.assert_close(layer(x), base(x) + conv_b(conv_a(x)), rtol=1e-5, atol=1e-5)


def test_loha_delta_is_hadamard_of_two_low_rank_products():
    layer = randomise(adapt_layer('conv', nn.Conv2d(4, 6, 3), dict(type='loha', rank=2, alpha=1.)))
    a = layer.adapter
    expected = ((a.hada_w1_a @ a.hada_w1_b) * (a.hada_w2_a @ a.hada_w2_b)).reshape(6, 4, 3, 3) * 0.5
    torch.testing.assert_close(a.delta_weight(layer.weight), expected)
    lora = adapt_layer('conv', nn.Conv2d(4, 6, 3), dict(type='lora', rank=2))
    count = lambda m: sum(p.numel() for p in m.adapter.parameters())  # noqa: E731
    assert count(layer) == 2 * count(lora)


@pytest.mark.parametrize('factorization', sorted(FACTORIZATIONS.module_dict))
def test_identity_at_init_and_scaling(factorization):
    base = nn.Conv2d(3, 5, 3, padding=1)
    layer = adapt_layer('conv', base, dict(type=factorization, rank=3))
    x = torch.randn(2, 3, 9, 11)
    assert torch.equal(layer(x), base(x))
    assert layer.adapter.scaling == 1.0  # alpha defaults to the rank
    assert adapt_layer('c', nn.Conv2d(5, 5, 1), dict(type=factorization, rank=4, alpha=2)).adapter.scaling == 0.5


def test_adapted_layer_shares_frozen_parameters_and_names():
    base = nn.Conv2d(3, 5, 3)
    layer = adapt_layer('conv', base, dict(type='lora', rank=1))
    assert isinstance(layer, AdaptedConv2d) and isinstance(layer, nn.Conv2d)
    assert layer.weight is base.weight and layer.bias is base.bias
    assert set(layer.state_dict()) == {'weight', 'bias', 'adapter.lora_A', 'adapter.lora_B'}
    assert isinstance(adapt_layer('fc', nn.Linear(3, 4), dict(type='lora', rank=1)), AdaptedLinear)


def test_merge_twice_and_unmerge_unmerged_are_refused():
    layer = randomise(adapt_layer('fc', nn.Linear(4, 4), dict(type='lora', rank=2)))
    with pytest.raises(RuntimeError, match='not merged'):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match='already merged'):
        layer.merge()


def test_non_finite_delta_is_not_merged():
    layer = adapt_layer('fc', nn.Linear(4, 4), dict(type='lora', rank=2))
    before = layer.weight.detach().clone()
    layer.adapter.lora_B.data[0, 0] = float('nan')
    with pytest.raises(ValueError, match='non-finite'):
        layer.merge()
    assert torch.equal(layer.weight, before) and not layer.merged


def test_dropout_only_on_the_adapter_path():
    base = nn.Linear(16, 16)
    layer = randomise(adapt_layer('fc', base, dict(type='lora', rank=4, dropout=0.5)))
    x = torch.randn(8, 16)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    eval_out = layer(x)
    layer.merge()
    assert rel_err(layer(x), eval_out) <= 1e-5
    with pytest.raises(ValueError, match='dropout'):
        adapt_layer('fc', nn.Linear(4, 4), dict(type='loha', rank=2, dropout=0.1))


@pytest.mark.parametrize('bad', [0, -1, 1.5])
def test_bad_rank_is_refused(bad):
    with pytest.raises(ValueError, match='rank'):
        adapt_layer('fc', nn.Linear(4, 4), dict(type='lora', rank=bad))


def test_unsupported_layer_type_is_refused_by_name():
    with pytest.raises(TypeError, match="'blocks.0.dw'.*ConvTranspose2d"):
        adapt_layer('blocks.0.dw', nn.ConvTranspose2d(4, 4, 3), dict(type='lora', rank=1))


def test_grouped_conv_trains_through_fused_kernel():
    base = nn.Conv2d(6, 4, 3, padding=1, groups=2)
    layer = randomise(adapt_layer('conv', base, dict(type='lora', rank=2)))
    assert layer.adapter.lora_A.shape == (2, 3, 3, 3)  # the (out, in/groups·k²) matrix is factorised
    layer(torch.randn(1, 6, 8, 8)).sum().backward()
    assert layer.adapter.lora_A.grad.abs().sum() > 0 and layer.adapter.lora_B.grad.abs().sum() > 0
