"""DoRA: magnitude · (W + s·BA) / ‖W + s·BA‖ per output channel, against a written-out formula and peft 0.21."""
import pytest
import torch
from peft_reference import run_with_peft
from torch import nn

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


PEFT_DORA = '''
from peft import LoraConfig, get_peft_model
outputs = {}
for name, case in INPUTS.items():
    base = torch.nn.Linear(**case['geometry']) if 'in_features' in case['geometry'] else \\
        torch.nn.Conv2d(**case['geometry'])
    base.load_state_dict(case['base'])
    model = get_peft_model(torch.nn.Sequential(base), LoraConfig(r=case['rank'], lora_alpha=case['alpha'],
                                                                  target_modules=['0'], use_dora=True))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_A['default'].weight.copy_(case['lora_A'])
        layer.lora_B['default'].weight.copy_(case['lora_B'])
        magnitude = layer.lora_magnitude_vector['default'].weight
        magnitude.copy_(case['magnitude'].view_as(magnitude))
        model.eval()
        out = model(case['x'])
        layer.merge()
    outputs[name] = dict(out=out, merged=layer.base_layer.weight.detach().clone())
torch.save(outputs, OUTPUTS)
'''


def test_equals_peft_dora(tmp_path):
    """Same frozen layer, same factor values: peft 0.21's DoRA (use_dora=True) gives our outputs and merged
    kernels to 1e-5 (scaled by their magnitude; sums run in other orders)."""
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
    theirs = run_with_peft(PEFT_DORA, cases, tmp_path)
    for name in cases:
        for key in ('out', 'merged'):
            err = (ours[name][key] - theirs[name][key]).abs().max().item()
            tol = 1e-5 * max(1., theirs[name][key].abs().max().item())
            print(f'{name} {key}: max |ours - peft| = {err:.2e}')
            assert err <= tol, f'{name} {key}: max |ours - peft| = {err:.2e} > {tol:.2e}'
