"""DoRA: magnitude · (W + s·BA) / ‖W + s·BA‖ per output channel, against a written-out formula and peft 0.21."""
import pytest
import torch
from peft_reference import run_with_peft
from timm.layers import Conv2dSame
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from petah_mm.adapters import adapt_layer

LINEAR = dict(in_features=12, out_features=10)
CONV = dict(in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1)


def dora_layer(base, rank=3, alpha=6., seed=0, **cfg):
    """A DoRA layer with every factor random (the magnitude near the norms, as after some training)."""
    layer = adapt_layer('layer', base.requires_grad_(False), dict(type='dora', rank=rank, alpha=alpha, **cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.adapter.lora_A, layer.adapter.lora_B):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        layer.adapter.magnitude.mul_(1 + 0.2 * torch.rand(layer.adapter.magnitude.shape, generator=g))
    return layer


def layers():
    torch.manual_seed(0)
    return [(dora_layer(nn.Linear(**LINEAR)), torch.randn(2, 5, 12)),
            (dora_layer(nn.Conv2d(**CONV)), torch.randn(2, 6, 11, 9))]


def reference_kernel(layer):
    """The paper's Eq. (5) written out in float64: m · V / ‖V‖_c, V = W + s·reshape(B2D A2D)."""
    a = layer.adapter
    w = layer.weight.double()
    v = w + a.scaling * (a.lora_B.double().reshape(a.out_features, -1) @ a.lora_A.double().reshape(a.rank, -1)
                         ).reshape(w.shape)
    norms = torch.stack([v[o].flatten().square().sum().sqrt() for o in range(v.shape[0])])
    return v * (a.magnitude.double() / norms).view(-1, *(1, ) * (w.dim() - 1))


@pytest.mark.parametrize('base', [nn.Linear(**LINEAR), nn.Conv2d(**CONV), nn.Conv2d(6, 6, 3, padding=1, groups=3)],
                         ids=['linear', 'conv', 'grouped-conv'])
def test_magnitude_starts_at_the_row_norms_and_the_layer_at_the_frozen_one(base):
    torch.manual_seed(0)
    layer = adapt_layer('layer', base, dict(type='dora', rank=2))
    x = torch.randn(2, 5, 12) if isinstance(base, nn.Linear) else torch.randn(2, 6, 7, 7)
    expected = torch.stack([row.norm() for row in base.weight.detach().reshape(base.weight.shape[0], -1)])
    torch.testing.assert_close(layer.adapter.magnitude.detach(), expected, rtol=1e-6, atol=0)
    assert torch.equal(layer(x), base(x)), 'DoRA at init must compute exactly the frozen layer'
    layer.merge()
    assert torch.equal(layer.weight, base.weight), 'merging DoRA at init must leave the kernel as it was'


def test_merged_kernel_and_forward_are_the_papers_formula():
    for layer, x in layers():
        expected = reference_kernel(layer)
        merged = layer.adapter.merged_weight(layer.weight)
        err = (merged.double() - expected).abs().max().item()
        assert err <= 1e-6 * expected.abs().max().item(), f'merged kernel off by {err:.2e}'
        out = layer.eval()(x)
        plain = layer.apply_kernel(x.double(), expected, layer.bias.double())
        err, tol = (out.double() - plain).abs().max().item(), 1e-5 * plain.abs().max().item()
        assert err <= tol, f'unmerged forward off by {err:.2e} (tolerance {tol:.2e})'


def test_merge_unmerge_is_bit_exact_over_1000_switches():
    for layer, x in layers():
        frozen = layer.weight.detach().clone()
        layer.eval()
        with torch.no_grad():
            unmerged = layer(x)
            layer.merge()
            merged_kernel = layer.weight.detach().clone()
            for _ in range(999):
                layer.unmerge()
                layer.merge()
            assert torch.equal(layer.weight, merged_kernel)
            layer.unmerge()
        assert torch.equal(layer.weight, frozen), 'the frozen kernel changed over 1000 merge/unmerge switches'
        assert torch.equal(layer(x), unmerged)


def test_the_norm_is_detached_in_training():
    """Gradients are those of m · V / c with c = ‖V‖ a constant (the paper's Section 4.3), not through ‖V‖."""
    layer, x = layers()[1]
    layer.train()
    layer(x).square().sum().backward()
    a = layer.adapter
    grads = [p.grad.clone() for p in (a.lora_A, a.lora_B, a.magnitude)]
    leaves = [p.detach().clone().requires_grad_() for p in (a.lora_A, a.lora_B, a.magnitude)]

    def output(detach):
        lora_A, lora_B, magnitude = leaves
        v = layer.weight + a.scaling * (lora_B.reshape(a.out_features, -1) @ lora_A.reshape(a.rank, -1)).reshape(
            layer.weight.shape)
        norms = v.reshape(v.shape[0], -1).norm(dim=1)
        norms = norms.detach() if detach else norms
        return layer.apply_kernel(x, v * (magnitude / norms).view(-1, 1, 1, 1), layer.bias)

    for detach in (True, False):
        expected = torch.autograd.grad(output(detach).square().sum(), leaves)
        close = all(torch.allclose(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item()) for g, e in zip(grads, expected))
        assert close == detach, f'gradients {"differ from" if detach else "equal"} those with the norm ' \
                                f'{"detached" if detach else "differentiated"}'


def test_peft_form_with_dropout_equals_the_fused_form():
    """The two-layer form (what dropout needs) is the fused kernel's output when dropout is the identity."""
    for layer, x in layers():
        layer.train()
        fused = layer.adapter.fused_forward(x, layer)
        branch = layer.adapter.branch_forward(x, layer)
        err, tol = (branch - fused).abs().max().item(), 1e-5 * fused.abs().max().item()
        assert err <= tol, f'forms differ by {err:.2e} (tolerance {tol:.2e})'
    layer = dora_layer(nn.Linear(**LINEAR), dropout=0.5).train()
    torch.manual_seed(1)
    with_dropout = layer(torch.ones(4, 12))
    assert not torch.equal(with_dropout[0], with_dropout[1]), 'dropout had no effect in training'


KERNELS = ('LowRankConv2dBackward', 'LowRankLinearBackward')
#: the layers whose DoRA trains through LoRA's low-rank kernel (1×1, strided k×k, dilated, TF same padding)
KERNEL_CASES = {'linear': (lambda: nn.Linear(12, 10), (2, 5, 12)),
                'conv': (lambda: nn.Conv2d(**CONV), (2, 6, 11, 9)),
                'pointwise': (lambda: nn.Conv2d(6, 8, 1, bias=False), (2, 6, 7, 5)),
                'dilated': (lambda: nn.Conv2d(6, 8, 3, padding=2, dilation=2), (2, 6, 9, 9)),
                'same-padding': (lambda: Conv2dSame(6, 8, 3, stride=2), (2, 6, 10, 9))}


def graph_ops(out: torch.Tensor) -> set:
    """The names of every autograd node ``out`` was computed through."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


def output_and_grads(layer, x, forward):
    """The output and the gradients of x, lora_A, lora_B and magnitude for a squared-sum loss."""
    x = x.clone().requires_grad_()
    layer.adapter.zero_grad(set_to_none=True)
    out = forward(x)
    out.to(torch.promote_types(out.dtype, torch.float32)).square().sum().backward()  # float64 stays so
    factors = (layer.adapter.lora_A, layer.adapter.lora_B, layer.adapter.magnitude)
    return out, [x.grad] + [p.grad.clone() for p in factors]


@pytest.mark.parametrize('case', list(KERNEL_CASES))
def test_training_runs_the_low_rank_kernel_with_the_fused_forms_gradients(case):
    """In float64 the low-rank training path gives the fused kernel's output and gradients to rounding, and
    autograd runs through LoRA's kernel, not through a full-kernel convolution or matrix product."""
    make, shape = KERNEL_CASES[case]
    torch.manual_seed(0)
    layer = dora_layer(make()).double().train()
    x = torch.randn(shape, dtype=torch.double)
    out, grads = output_and_grads(layer, x, layer)
    assert graph_ops(out) & set(KERNELS), f'{case}: DoRA training did not run the low-rank kernel'
    fused_out, fused_grads = output_and_grads(layer, x, lambda x: layer.adapter.fused_forward(x, layer))
    assert not graph_ops(fused_out) & set(KERNELS)
    for name, a, b in zip(['output', 'grad x', 'grad lora_A', 'grad lora_B', 'grad magnitude'], [out] + grads,
                          [fused_out] + fused_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item(), msg=f'{case}: {name}')


def test_grouped_convs_dropout_and_inference_keep_their_forms():
    """A grouped conv has no two-layer form: it trains through the fused kernel; dropout takes peft's form;
    eval, no_grad and traces run the fused kernel (plain ops, for FLOPs counters)."""
    torch.manual_seed(0)
    grouped = dora_layer(nn.Conv2d(6, 6, 3, padding=1, groups=3)).train()
    x = torch.randn(2, 6, 7, 7)
    assert not graph_ops(grouped(x)) & set(KERNELS) and 'ConvolutionBackward0' in graph_ops(grouped(x))
    dropout = dora_layer(nn.Conv2d(**CONV), dropout=0.1).train()
    calls = []
    dropout.adapter.branch_forward = lambda x, layer: calls.append('branch') or type(layer.adapter).branch_forward(
        layer.adapter, x, layer)
    assert not graph_ops(dropout(torch.randn(2, 6, 11, 9))) & set(KERNELS) and calls == ['branch']
    layer = dora_layer(nn.Conv2d(**CONV)).train()
    x = torch.randn(2, 6, 11, 9)
    with torch.no_grad():
        assert layer(x).grad_fn is None
    assert not graph_ops(layer.eval()(x)) & set(KERNELS)
    assert 'PythonOp' not in str(torch.jit.trace(layer.train(), x, check_trace=False).graph)


class LargeFloat32Outputs(TorchDispatchMode):
    """Records every op that writes a float32 tensor of at least ``numel`` elements."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out, ):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() >= self.numel:
                self.ops.append(f'{func}{tuple(t.shape)}')
        return out


@pytest.mark.parametrize('case', ['linear', 'conv', 'pointwise'])
def test_bf16_autocast_computes_in_bf16_without_float32_copies_of_the_activations(case):
    """Under autocast the output is bf16 and neither the forward nor the backward writes a float32 tensor of
    the activations' size (the fp32 per-channel scale is cast, not the output promoted); the factors keep
    fp32 gradients, close to the fp32 path's (bf16 keeps 8 bits: a few roundings, 3 % relative)."""
    make, shape = KERNEL_CASES[case]
    torch.manual_seed(0)
    layer = dora_layer(make()).train()
    x = torch.randn(shape[0], 64, shape[-1]) if case == 'linear' else torch.randn(*shape[:2], 24, 24)
    fp32_out, fp32_grads = output_and_grads(layer, x, layer)
    big = min(x.numel(), fp32_out.numel())
    recorder = LargeFloat32Outputs(big)
    with recorder:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = layer(x.clone().requires_grad_())
        assert out.dtype == torch.bfloat16 and graph_ops(out) & set(KERNELS)
        out.square().sum().backward()  # a bf16 loss: any float32 activation-sized tensor is then the layer's
    # the only ones: the gradient of x, which is float32 as x is (the output's shape differs from x's)
    assert recorder.ops and all(op.endswith(str(tuple(x.shape))) for op in recorder.ops), \
        f'float32 tensors of the activations\' size written by {recorder.ops}'
    _, grads = output_and_grads(layer, x, lambda x: torch.autocast('cpu', dtype=torch.bfloat16)(layer)(x))
    for name, g, ref in zip(['grad x', 'grad lora_A', 'grad lora_B', 'grad magnitude'], grads, fp32_grads):
        assert g.dtype == torch.float32, name
        assert ((g - ref).norm() / ref.norm()).item() < 0.03, name


PEFT_DORA = '''
from peft import LoraConfig, get_peft_model
outputs = {}
for name, case in INPUTS.items():
    base = torch.nn.Linear(**case['geometry']) if 'in_features' in case['geometry'] else \\
        torch.nn.Conv2d(**case['geometry'])
    base.load_state_dict(case['base'])
    model = get_peft_model(torch.nn.Sequential(base), LoraConfig(r=case['rank'], lora_alpha=case['alpha'],
                                                                  target_modules=['0'], use_dora=True))
    model.to(case['x'].dtype)  # peft keeps the factors float32 on a float64 base layer
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_A['default'].weight.copy_(case['lora_A'])
        layer.lora_B['default'].weight.copy_(case['lora_B'])
        magnitude = layer.lora_magnitude_vector['default'].weight
        magnitude.copy_(case['magnitude'].view_as(magnitude))
        model.eval()
        out = model(case['x'])
    model.train()  # dropout 0: peft's DoRA form, its weight norm detached
    model(case['x']).square().sum().backward()
    grads = {k: p.grad.reshape(-1) for k, p in (('lora_A', layer.lora_A['default'].weight),
             ('lora_B', layer.lora_B['default'].weight), ('magnitude', magnitude))}
    with torch.no_grad():
        layer.merge()
    outputs[name] = dict(out=out, merged=layer.base_layer.weight.detach().clone(), grads=grads)
torch.save(outputs, OUTPUTS)
'''


def test_equals_peft_dora(tmp_path):
    """Same frozen layer, same factor values: peft 0.21's DoRA (use_dora=True) gives our outputs and merged
    kernels to 1e-5 (scaled by their magnitude; sums run in other orders), and, trained through our low-rank
    kernel, the gradients of lora_A, lora_B and the magnitude, in float64 to 1e-10."""
    cases, ours = {}, {}
    for (layer, x), name, geometry in zip(layers(), ('linear', 'conv'), (LINEAR, CONV)):
        a = layer.adapter
        base = {k: v for k, v in layer.state_dict().items() if not k.startswith('adapter.')}
        cases[name] = dict(geometry=geometry, base=base, rank=a.rank, alpha=a.alpha, x=x,
                           **{k: getattr(a, k).detach() for k in ('lora_A', 'lora_B', 'magnitude')})
        with torch.no_grad():
            out = layer.eval()(x)
            layer.merge()
        ours[name] = dict(out=out, merged=layer.weight.detach().clone())
        layer.unmerge()
        layer.double().train()
        out, grads = output_and_grads(layer, x.double(), layer)
        assert graph_ops(out) & set(KERNELS)
        ours[name]['grads'] = dict(zip(('lora_A', 'lora_B', 'magnitude'), (g.reshape(-1) for g in grads[1:])))
        cases[name + ' float64'] = {k: v.double() if torch.is_tensor(v) else v for k, v in cases[name].items()}
        cases[name + ' float64']['base'] = {k: v.double() for k, v in base.items()}
    theirs = run_with_peft(PEFT_DORA, cases, tmp_path)
    for name in ours:
        for key in ('out', 'merged'):
            err = (ours[name][key] - theirs[name][key]).abs().max().item()
            tol = 1e-5 * max(1., theirs[name][key].abs().max().item())
            print(f'{name} {key}: max |ours - peft| = {err:.2e}')
            assert err <= tol, f'{name} {key}: max |ours - peft| = {err:.2e} > {tol:.2e}'
        for key, grad in ours[name]['grads'].items():
            expected = theirs[name + ' float64']['grads'][key]
            torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10 * expected.abs().max().item(),
                                       msg=f'{name}: gradient of {key}')
