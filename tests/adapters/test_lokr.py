"""LoKr: ΔW = kron(W1, W2) · scaling, shapes and counts as peft 0.21's LoKr, against formulas and peft."""
import pytest
import torch
from peft_reference import run_with_peft
from torch import nn

from petah_mm.adapters import adapt_layer, build_plan
from petah_mm.adapters.lokr import factorization


def lokr(base, rank=2, **cfg):
    return adapt_layer('layer', base.requires_grad_(False), dict(type='lokr', rank=rank, **cfg))


def randomise(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return layer


def test_factorization_splits_as_peft_documents():
    """The examples of peft's ``factorization`` docstring, and the splits of EF-L7's attention widths."""
    assert factorization(256) == (16, 16) and factorization(128) == (8, 16) and factorization(127) == (1, 127)
    assert factorization(128, 4) == (4, 32) and factorization(128, 3) == (2, 64)
    assert factorization(768) == (24, 32) and factorization(2304) == (48, 48)


def expected_count(out, fan_in, kernel, rank, factor=-1, decompose_both=False):
    """peft's rule, written out: W1 (a, c) full unless decompose_both and r < max(a, c)/2; W2 (b, d·k²) full
    unless r < max(b, d)/2."""
    (a, b), (c, d) = factorization(out, factor), factorization(fan_in, factor)
    w1 = (a + c) * rank if decompose_both and rank < max(a, c) / 2 else a * c
    w2 = (b + d * kernel) * rank if rank < max(b, d) / 2 else b * d * kernel
    return w1 + w2


@pytest.mark.parametrize('settings', [dict(rank=8), dict(rank=2, factor=4), dict(rank=1, decompose_both=True),
                                      dict(rank=40)])
def test_parameter_counts_follow_the_formula(settings):
    for base, (out, fan_in, kernel) in ((nn.Linear(768, 2304), (2304, 768, 1)),
                                        (nn.Conv2d(96, 384, 3, padding=1), (384, 96, 9)),
                                        (nn.Conv2d(64, 64, 1), (64, 64, 1))):
        layer = lokr(base, **settings)
        count = sum(p.numel() for p in layer.adapter.parameters())
        assert count == expected_count(out, fan_in, kernel, **settings), (base, settings)


def test_delta_is_the_kronecker_product_with_the_kernel_in_W2():
    layer = randomise(lokr(nn.Conv2d(4, 6, 3), rank=1, alpha=3.))  # out 6 = 2·3, in 4 = 2·2, W2 low rank
    a = layer.adapter
    w1, w2 = a.lokr_w1, (a.lokr_w2_a @ a.lokr_w2_b).reshape(3, 2, 3, 3)
    expected = torch.zeros(6, 4, 3, 3)
    for i in range(2):  # ΔW[i·3 + j, p·2 + q] = W1[i, p] · W2[j, q] (a k×k block), written out
        for p in range(2):
            for j in range(3):
                for q in range(2):
                    expected[i * 3 + j, p * 2 + q] = w1[i, p] * w2[j, q]
    torch.testing.assert_close(a.delta_weight(layer.weight), expected * 3.)


@pytest.mark.parametrize('base', [nn.Linear(12, 10), nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(6, 6, 3, groups=3)],
                         ids=['linear', 'conv', 'grouped-conv'])
def test_identity_at_init_and_merge_exactness(base):
    torch.manual_seed(0)
    layer = lokr(base, rank=2, decompose_both=True)
    x = torch.randn(2, 5, 12) if isinstance(base, nn.Linear) else torch.randn(2, 6, 9, 7)
    assert torch.equal(layer(x), base(x)), 'LoKr at init must compute exactly the frozen layer'
    randomise(layer).eval()
    frozen = base.weight.detach().clone()
    with torch.no_grad():
        unmerged = layer(x)
        for _ in range(1000):
            layer.merge()
            merged = layer(x)
            layer.unmerge()
    err, tol = (merged - unmerged).abs().max().item(), 1e-5 * unmerged.abs().max().item()
    assert err <= tol, f'merged output off by {err:.2e} (tolerance {tol:.2e})'
    assert torch.equal(layer.weight, frozen), 'the frozen kernel changed over 1000 merge/unmerge switches'


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match='adapter.factor must be -1'):
        lokr(nn.Linear(8, 8), factor=0)
    with pytest.raises(ValueError, match='adapter.decompose_both must be True or False'):
        lokr(nn.Linear(8, 8), decompose_both='yes')
    with pytest.raises(ValueError, match="adapter.factr is not a setting of factorization 'lokr'.*factor"):
        build_plan('petah', conv_rank=2, factorization='lokr', factr=4)
    with pytest.raises(ValueError, match='dropout=0.1 is not supported by the LoKr'):
        lokr(nn.Linear(8, 8), dropout=0.1)
    plan = build_plan('petah', conv_rank=2, factorization='lokr', factor=4, decompose_both=True)
    assert plan.adapters['conv'] == dict(type='lokr', rank=2, alpha=None, dropout=0., factor=4, decompose_both=True)


SHAPES = dict(linear=[(768, 2304), (384, 384), (127, 96)], conv=[(3, 24, 3), (48, 96, 3), (64, 64, 1), (96, 192, 3)])

PEFT_COUNTS = '''
from peft import LoKrConfig, get_peft_model
outputs = {}
for name, (settings, shapes) in INPUTS.items():
    layers = [torch.nn.Linear(i, o) for i, o in shapes['linear']] + \\
        [torch.nn.Conv2d(i, o, k, padding=k // 2) for i, o, k in shapes['conv']]
    targets = [str(i) for i in range(len(layers))]
    model = get_peft_model(torch.nn.Sequential(*layers), LoKrConfig(r=settings['rank'], alpha=settings['rank'],
        target_modules=targets, decompose_factor=settings['factor'], decompose_both=settings['decompose_both']))
    outputs[name] = [sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and f'.{i}.' in n)
                     for i in range(len(layers))]
torch.save(outputs, OUTPUTS)
'''


def test_parameter_counts_equal_peft(tmp_path):
    """Per layer, for Linear and Conv2d targets, with and without factor and decompose_both."""
    settings = {f'r{r}-f{f}-{d}': dict(rank=r, factor=f, decompose_both=d)
                for r in (1, 2, 8) for f in (-1, 4) for d in (False, True)}
    ours = {}
    for name, s in settings.items():
        own = dict(factor=s['factor'], decompose_both=s['decompose_both'])
        layers = [lokr(nn.Linear(i, o), s['rank'], **own) for i, o in SHAPES['linear']]
        layers += [lokr(nn.Conv2d(i, o, k), s['rank'], **own) for i, o, k in SHAPES['conv']]
        ours[name] = [sum(p.numel() for p in layer.adapter.parameters()) for layer in layers]
    theirs = run_with_peft(PEFT_COUNTS, {name: (s, SHAPES) for name, s in settings.items()}, tmp_path)
    for name in settings:
        assert ours[name] == theirs[name], f'{name}: ours {ours[name]}, peft {theirs[name]}'
