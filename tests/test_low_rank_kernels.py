"""The low-rank training kernels: exact gradients, and used only where they are exact."""
from unittest import mock

import pytest
import torch
from torch import nn

from petah_mm.adapters import adapt_layer
from petah_mm.adapters.low_rank_kernels import LowRankConv2d, LowRankLinear

CONV_GEOMETRIES = [
    dict(kernel_size=1),  # the pointwise matrix-product path
    dict(kernel_size=1, stride=2),
    dict(kernel_size=3, stride=2, padding=2, dilation=2),
    dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0)),
]


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES)
def test_conv_kernel_passes_gradcheck(geometry):
    conv = nn.Conv2d(3, 4, **geometry).double()
    x = torch.randn(2, 3, 9, 7, dtype=torch.double, requires_grad=True)
    lora_A = torch.randn(2, 3, *conv.kernel_size, dtype=torch.double, requires_grad=True)
    lora_B = torch.randn(4, 2, 1, 1, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, a, b: LowRankConv2d.apply(x, conv.weight.detach(), conv.bias.detach(), a, b, 1.5, conv.stride,
                                            conv.padding, conv.dilation), (x, lora_A, lora_B))


def test_linear_kernel_passes_gradcheck():
    x = torch.randn(2, 5, 6, dtype=torch.double, requires_grad=True)
    weight, bias = torch.randn(4, 6, dtype=torch.double), torch.randn(4, dtype=torch.double)
    lora_A = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
    lora_B = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b: LowRankLinear.apply(x, weight, bias, a, b, 0.5),
                                    (x, lora_A, lora_B))


def gradients(layer, x, forward):
    x = x.clone().requires_grad_()
    layer.adapter.zero_grad(set_to_none=True)
    out = forward(x)
    out.backward(torch.ones_like(out))
    return [out, x.grad] + [p.grad for p in layer.adapter.parameters()]


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES)
def test_training_matches_the_papers_two_layer_form(geometry):
    base = nn.Conv2d(5, 7, **geometry).requires_grad_(False)
    layer = adapt_layer('conv', base, dict(type='lora', rank=2, alpha=4.))
    nn.init.normal_(layer.adapter.lora_B)
    x = torch.randn(2, 5, 37, 53)
    with mock.patch.object(LowRankConv2d, 'apply', wraps=LowRankConv2d.apply) as kernel:
        fast = gradients(layer, x, layer)
    assert kernel.called
    reference = gradients(layer, x, lambda x: layer.adapter.branch_forward(x, layer))
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def kernel_calls(layer, x):
    with mock.patch.object(LowRankConv2d, 'apply', wraps=LowRankConv2d.apply) as conv, \
            mock.patch.object(LowRankLinear, 'apply', wraps=LowRankLinear.apply) as linear:
        layer(x).sum().backward()
    return conv.call_count + linear.call_count


def test_kernels_are_skipped_where_they_would_be_wrong():
    """They return no gradient for the frozen weight and bias and know neither dropout nor
    grouped or non-zero padding, so those cases take autograd's path instead."""
    frozen = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2))
    assert kernel_calls(frozen, torch.randn(3, 4)) == 1
    trainable_bias = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2))
    trainable_bias.bias.requires_grad_(True)
    assert kernel_calls(trainable_bias, torch.randn(3, 4)) == 0 and trainable_bias.bias.grad is not None
    dropout = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2, dropout=0.5))
    assert kernel_calls(dropout, torch.randn(3, 4)) == 0
    for conv in (nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'),
                 nn.Conv2d(4, 4, 3, padding='same')):
        layer = adapt_layer('conv', conv.requires_grad_(False), dict(type='lora', rank=2))
        assert kernel_calls(layer, torch.randn(1, 4, 8, 8)) == 0
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert kernel_calls(frozen, torch.randn(3, 4)) == 0


def test_inference_runs_one_op_with_the_effective_kernel():
    base = nn.Conv2d(5, 7, 3, padding=1).requires_grad_(False)
    layer = adapt_layer('conv', base, dict(type='lora', rank=2))
    nn.init.normal_(layer.adapter.lora_B)
    x = torch.randn(1, 5, 12, 12)
    with torch.no_grad(), mock.patch.object(layer.adapter, 'branch_forward') as branch:
        out = layer(x)
    assert not branch.called
    torch.testing.assert_close(out, layer.adapter.branch_forward(x, layer), rtol=1e-5, atol=1e-5)
