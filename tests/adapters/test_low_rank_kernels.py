"""The low-rank training kernels: exact gradients, in fp32 and under autocast, and used only where
they are exact; unmerged inference picks the cheaper plain-op form per layer."""
from unittest import mock

import pytest
import torch
from torch import nn

from petah_mm.adapters import adapt_layer, is_adapter_key
from petah_mm.adapters.lora import LoRA
from petah_mm.adapters.low_rank_kernels import low_rank_conv2d, low_rank_linear
from petah_mm.testing import randomise_adapters

CONV_GEOMETRIES = [
    dict(kernel_size=1),  # the pointwise matrix-product path
    dict(kernel_size=1, stride=2),
    dict(kernel_size=3, stride=2, padding=2, dilation=2),
    dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0)),
]
KERNELS = ('LowRankConv2dBackward', 'LowRankLinearBackward')


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES)
def test_conv_kernel_passes_gradcheck(geometry):
    conv = nn.Conv2d(3, 4, **geometry).double()
    x = torch.randn(2, 3, 9, 7, dtype=torch.double, requires_grad=True)
    lora_A = torch.randn(2, 3, *conv.kernel_size, dtype=torch.double, requires_grad=True)
    lora_B = torch.randn(4, 2, 1, 1, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, a, b: low_rank_conv2d(x, conv.weight.detach(), conv.bias.detach(), a, b, 1.5, conv.stride,
                                        conv.padding, conv.dilation), (x, lora_A, lora_B))


def test_linear_kernel_passes_gradcheck():
    x = torch.randn(2, 5, 6, dtype=torch.double, requires_grad=True)
    weight, bias = torch.randn(4, 6, dtype=torch.double), torch.randn(4, dtype=torch.double)
    lora_A = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
    lora_B = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b: low_rank_linear(x, weight, bias, a, b, 0.5), (x, lora_A, lora_B))


def gradients(layer, x, forward, dtype=None):
    """Output and the gradients of x, A and B, under autocast to ``dtype`` if given."""
    x = x.clone().requires_grad_()
    layer.adapter.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
        out = forward(x)
    out.float().square().sum().backward()
    return [out, x.grad] + [p.grad for p in layer.adapter.parameters()]


def adapted_conv(geometry, channels=(5, 7)):
    layer = adapt_layer('conv', nn.Conv2d(*channels, **geometry).requires_grad_(False),
                        dict(type='lora', rank=2, alpha=4.))
    nn.init.normal_(layer.adapter.lora_B)
    return layer


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES)
def test_training_matches_the_papers_two_layer_form(geometry):
    layer = adapted_conv(geometry)
    x = torch.randn(2, 5, 37, 53)
    fast = gradients(layer, x, layer)
    assert type(fast[0].grad_fn).__name__ == 'LowRankConv2dBackward'
    reference = gradients(layer, x, lambda x: layer.adapter.branch_forward(x, layer))
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 %); each side rounds differently
# (the kernel adds ΔW to W before rounding, the two-layer form rounds W, A and B separately), so
# outputs and gradients agree to a few roundings: 2 % relative (Frobenius) error, and both lie
# within 3 % of the fp32 truth.
BF16_TOLERANCE, BF16_VS_FP32 = 0.02, 0.03


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES + ['linear'])
def test_bf16_autocast_keeps_the_kernels_and_their_gradients(geometry):
    if geometry == 'linear':
        layer = adapt_layer('fc', nn.Linear(24, 40).requires_grad_(False), dict(type='lora', rank=4))
        x, kernel = torch.randn(3, 49, 24), 'LowRankLinearBackward'
    else:
        layer, x, kernel = adapted_conv(geometry, (16, 24)), torch.randn(2, 16, 21, 19), 'LowRankConv2dBackward'
    nn.init.normal_(layer.adapter.lora_B, std=0.1)
    fast = gradients(layer, x, layer, torch.bfloat16)
    assert type(fast[0].grad_fn).__name__ == kernel  # the fast path under autocast
    assert fast[0].dtype == torch.bfloat16 and fast[1].dtype == torch.float32
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in layer.adapter.parameters())  # fp32 masters
    two_layer = gradients(layer, x, lambda x: layer.adapter.branch_forward(x, layer), torch.bfloat16)
    assert type(two_layer[0].grad_fn).__name__ not in KERNELS
    exact = gradients(layer, x.double(), lambda x: layer.double().adapter.branch_forward(x, layer))
    layer.float()
    for name, a, b, truth in zip(['output', 'input grad', 'grad A', 'grad B'], fast, two_layer, exact):
        assert relative_error(a, b) < BF16_TOLERANCE, name
        assert relative_error(a, truth) < BF16_VS_FP32 and relative_error(b, truth) < BF16_VS_FP32, name


def test_channels_last_inputs_and_weights_give_the_same_gradients():
    geometry = dict(kernel_size=3, stride=2, padding=1)
    layer = adapted_conv(geometry, (8, 12))
    x = torch.randn(2, 8, 15, 17)
    reference = gradients(layer, x, layer)
    pointwise = adapted_conv(dict(kernel_size=1), (8, 12))
    pointwise_reference = gradients(pointwise, x, pointwise)
    for module, expected in ((layer, reference), (pointwise, pointwise_reference)):
        module.to(memory_format=torch.channels_last)
        assert module.weight.is_contiguous(memory_format=torch.channels_last)
        channels_last = gradients(module, x.to(memory_format=torch.channels_last), module)
        assert type(channels_last[0].grad_fn).__name__ == 'LowRankConv2dBackward'
        for a, b in zip(channels_last, expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_kernels_gradients(build_ef):
    plain = randomise_adapters(build_ef())
    checkpointed = build_ef(with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads, kernel_calls = [], []
    for model in (plain, checkpointed):
        with mock.patch.object(LoRA, 'kernel_forward', autospec=True, side_effect=LoRA.kernel_forward) as kernel:
            sum(o.square().mean() for o in model.train()(x.clone().requires_grad_())).backward()
        kernel_calls.append(kernel.call_count)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert kernel_calls[1] > kernel_calls[0] > 0  # checkpointed blocks ran their kernels again in backward
    assert grads[0].keys() == grads[1].keys() and any(is_adapter_key(n) for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def output_kind(layer, x):
    """'kernel', 'two-layer' (Eq. (2) with autograd), 'thin' (inference's two-layer form) or 'fused'."""
    with mock.patch.object(layer.adapter, 'branch_forward', wraps=layer.adapter.branch_forward) as branch, \
            mock.patch.object(layer.adapter, 'thin_forward', wraps=layer.adapter.thin_forward) as thin:
        out = layer(x)
    if out.grad_fn is not None and type(out.grad_fn).__name__ in KERNELS:
        return 'kernel'
    return 'two-layer' if branch.called else 'thin' if thin.called else 'fused'


def test_kernels_are_skipped_where_they_would_be_wrong():
    """They return no gradient for the frozen weight and bias and know neither dropout nor
    grouped or non-zero padding, so those cases take autograd's path instead."""
    frozen = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2))
    assert output_kind(frozen, torch.randn(3, 4)) == 'kernel'
    trainable_bias = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2))
    trainable_bias.bias.requires_grad_(True)
    assert output_kind(trainable_bias, torch.randn(3, 4)) == 'two-layer'
    dropout = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2, dropout=0.5))
    assert output_kind(dropout, torch.randn(3, 4)) == 'two-layer'
    for conv in (nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'),
                 nn.Conv2d(4, 4, 3, padding='same')):
        layer = adapt_layer('conv', conv.requires_grad_(False), dict(type='lora', rank=2))
        assert output_kind(layer, torch.randn(1, 4, 8, 8)) != 'kernel'


def test_traces_eval_and_no_grad_take_plain_ops():
    """FLOPs counters trace with gradients enabled and count a custom autograd function as zero."""
    layer = adapted_conv(dict(kernel_size=3, padding=1), (8, 8))
    x = torch.randn(1, 8, 32, 32)
    traced = torch.jit.trace(layer, x, check_trace=False)
    assert 'PythonOp' not in str(traced.graph) and 'aten::_convolution' in str(traced.graph)
    with torch.no_grad():
        assert output_kind(layer, x) != 'kernel'
    layer.eval()
    assert output_kind(layer, x) != 'kernel'


def test_inference_takes_the_cheaper_form_and_computes_the_same():
    """At batch 1 on 7×7 tokens building W + ΔW costs more than the thin layers; on a 64×64 map
    of a batch of 8 the thin layers cost more."""
    fc = adapt_layer('fc', nn.Linear(768, 768).requires_grad_(False), dict(type='lora', rank=8)).eval()
    nn.init.normal_(fc.adapter.lora_B)
    conv = adapt_layer('conv', nn.Conv2d(48, 192, 1).requires_grad_(False), dict(type='lora', rank=2)).eval()
    nn.init.normal_(conv.adapter.lora_B)
    pointwise = adapt_layer('conv', nn.Conv2d(384, 1536, 1).requires_grad_(False), dict(type='lora', rank=2)).eval()
    nn.init.normal_(pointwise.adapter.lora_B)
    cases = [(fc, torch.randn(1, 49, 768), 'thin'), (pointwise, torch.randn(1, 384, 14, 14), 'thin'),
             (conv, torch.randn(8, 48, 64, 64), 'fused')]
    for layer, x, kind in cases:
        with torch.no_grad():
            assert output_kind(layer, x) == kind
            fused = layer.adapter.fused_forward(x, layer)
            torch.testing.assert_close(layer(x), fused, rtol=1e-4, atol=1e-4)
            layer.merge()
            torch.testing.assert_close(layer(x), fused, rtol=1e-4, atol=1e-4)
            layer.unmerge()


@pytest.mark.parametrize('bias', [True, False])
def test_pointwise_inference_runs_as_matrix_products(bias):
    """An NCHW batch through a 1×1 conv takes GEMMs at CPU inference, in both forms, and gives the merged
    layer's output; a channels_last input, another device, a trace (FLOPs counters report the conv by
    operator) and autograd keep the convolution."""
    layer = adapted_conv(dict(kernel_size=1, bias=bias)).eval()
    a = layer.adapter
    x = torch.randn(2, 5, 9, 7)

    def conv_calls(fn):
        with mock.patch.object(nn.Conv2d, '_conv_forward', autospec=True, side_effect=nn.Conv2d._conv_forward) as conv:
            fn()
        return conv.call_count

    with torch.no_grad():
        outputs = []
        assert conv_calls(lambda: outputs.append(a.thin_forward(x, layer))) == 0
        assert conv_calls(lambda: outputs.append(a.fused_forward(x, layer))) == 0
        nhwc = x.to(memory_format=torch.channels_last)
        assert conv_calls(lambda: a.thin_forward(nhwc, layer)) == 2
        assert layer.runs_as_matmul(x) and not layer.runs_as_matmul(x.to('meta'))  # measured on the CPU only
        layer.merge()
        merged = layer(x)
        layer.unmerge()
    for out in outputs:
        torch.testing.assert_close(out, merged, rtol=1e-5, atol=1e-5)
    assert conv_calls(lambda: layer(x)) > 0
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            graph = str(torch.jit.trace(layer, x, check_trace=False).graph)
        assert 'aten::_convolution' in graph and 'baddbmm' not in graph


def test_pointwise_kernel_is_cast_once_not_per_sample():
    """Under autocast the 1×1 kernel is cast before it is expanded over the batch: autocast's cast of the
    expanded kernel would copy it once per sample (8 copies of every kernel at batch 8)."""
    layer = adapted_conv(dict(kernel_size=1)).eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        kernel = layer.batched(layer.weight, torch.randn(8, 5, 3, 3))
    assert kernel.dtype == torch.bfloat16 and kernel.shape == (8, 7, 5) and kernel.stride(0) == 0


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_inference_forms_equal_the_merged_layer(geometry, channels_last):
    """The thin form (B's product added in place, the scaling on the r channels) and the fused
    kernel (one addmm) both give the merged layer's output, alpha != rank, in either memory layout."""
    layer = adapted_conv(geometry).eval()
    x = torch.randn(2, 5, 9, 7)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        thin = layer.adapter.thin_forward(x, layer)
        fused = layer.adapter.fused_forward(x, layer)
        layer.merge()
        merged = layer(x)
    torch.testing.assert_close(thin, merged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, merged, rtol=1e-5, atol=1e-5)
    fc = adapt_layer('fc', nn.Linear(6, 4).requires_grad_(False), dict(type='lora', rank=3, alpha=1.)).eval()
    nn.init.normal_(fc.adapter.lora_B)
    tokens = torch.randn(2, 5, 6)
    with torch.no_grad():
        thin = fc.adapter.thin_forward(tokens, fc)
        fc.merge()
        torch.testing.assert_close(thin, fc(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('geometry', CONV_GEOMETRIES[:2])
def test_inference_forms_run_under_bf16_autocast(geometry):
    """Under autocast the frozen op's output is bf16 and the fp32 factors are cast to it before the
    in-place product, which autocast does not cover; the result is the merged layer's within bf16's
    precision (8 bits of mantissa: ~1 % of the output's scale)."""
    conv = adapted_conv(geometry).eval()
    fc = adapt_layer('fc', nn.Linear(6, 4).requires_grad_(False), dict(type='lora', rank=3, alpha=1.)).eval()
    nn.init.normal_(fc.adapter.lora_B)
    for layer, x in ((conv, torch.randn(2, 5, 9, 7)), (fc, torch.randn(2, 5, 6))):
        a = layer.adapter
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            thin = a.thin_forward(x, layer)
            fused = a.fused_forward(x, layer)
            layer.merge()
            merged = layer(x)
            layer.unmerge()
        assert thin.dtype == fused.dtype == merged.dtype == torch.bfloat16
        scale = merged.float().abs().max().item()
        torch.testing.assert_close(thin.float(), merged.float(), rtol=0, atol=0.02 * scale)
        torch.testing.assert_close(fused.float(), merged.float(), rtol=0, atol=0.02 * scale)
