"""The factorization is the one extension point: every registered one merges, unmerges and starts at
identity through the same layer code, and its own settings flow through plans, presets and adapter files."""
import math

import pytest
import torch
from torch import nn

from petah_mm.adapters import (FACTORIZATIONS, PRESETS, AdapterFileError, Factorization, adapt_layer, build_plan,
                               preset_name)

REGISTERED = sorted(FACTORIZATIONS.module_dict)
BASES = {'linear': lambda: nn.Linear(12, 10), 'conv': lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1),
         'grouped-conv': lambda: nn.Conv2d(6, 6, 3, padding=1, groups=3), 'pointwise': lambda: nn.Conv2d(6, 8, 1)}


def sample(base):
    return torch.randn(2, 5, 12) if isinstance(base, nn.Linear) else torch.randn(2, 6, 9, 7)


@pytest.mark.parametrize('kind', BASES)
@pytest.mark.parametrize('factorization', REGISTERED)
def test_every_factorization_starts_at_identity_and_merges_exactly(factorization, kind):
    torch.manual_seed(0)
    base = BASES[kind]().requires_grad_(False)
    layer = adapt_layer('layer', base, dict(type=factorization, rank=2))
    x = sample(base)
    assert torch.equal(layer(x), base(x)), f'{factorization} on a {kind} is not the frozen layer at init'
    with torch.no_grad():
        for p in layer.adapter.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    layer.eval()
    frozen = base.weight.detach().clone()
    with torch.no_grad():
        unmerged = layer(x)
        layer.merge()
        merged = layer(x)
        layer.unmerge()
    assert not torch.equal(unmerged, base(x)), 'the randomised adapter changed nothing'
    # two sum orders (W + ΔW in the kernel, or two layers): error grows with the reduction length
    fan_in = math.prod(base.weight.shape[1:])
    err, tol = (merged - unmerged).abs().max().item(), 1e-6 * math.sqrt(fan_in) * unmerged.abs().max().item()
    assert err <= tol, f'{factorization} on a {kind}: merged differs from unmerged by {err:.2e} (tolerance {tol:.2e})'
    assert torch.equal(layer.weight, frozen), 'unmerge did not restore the frozen kernel bit for bit'


@pytest.mark.parametrize('factorization', REGISTERED)
def test_reset_restores_identity_against_the_frozen_kernel_even_while_merged(factorization):
    base = nn.Conv2d(6, 8, 3, padding=1).requires_grad_(False)
    layer = adapt_layer('layer', base, dict(type=factorization, rank=2)).eval()
    with torch.no_grad():
        for p in layer.adapter.parameters():
            p.add_(0.1)
    layer.merge()
    layer.reset_adapter()
    layer.unmerge()
    x = sample(base)
    assert torch.equal(layer(x), base(x))


def test_settings_are_the_constructors_own_keywords():
    settings = {name: FACTORIZATIONS.get(name).settings() for name in REGISTERED}
    assert settings['lora'] == settings['loha'] == settings['dora'] == {}
    assert settings['lokr'] == dict(factor=-1, decompose_both=False)


def test_a_forced_form_runs_and_unknown_forms_are_refused_by_name():
    layer = adapt_layer('fc', nn.Linear(4, 4).requires_grad_(False), dict(type='lora', rank=2)).train()
    x = torch.randn(3, 4)
    assert type(layer(x).grad_fn).__name__ == 'LowRankLinearBackward'  # training's default form
    layer.adapter.use_form('fused')
    assert type(layer(x).grad_fn).__name__ == 'AddmmBackward0'  # F.linear(x, W + ΔW) with autograd
    with pytest.raises(ValueError, match="LoRA has no forward form 'thin2'; its forms: kernel, branch, thin, fused"):
        layer.adapter.use_form('thin2')


def test_a_new_factorization_is_one_registered_class():
    """A factorization defined here, with a setting of its own, works through the layers, plans and
    merge with no other code knowing it: ΔW = gain · W (a toy, so the test can check it exactly)."""

    class Gain(Factorization):

        def __init__(self, weight_shape, rank, alpha=None, dropout=0., init: float = 0.):
            super().__init__(weight_shape, rank, alpha)
            self.init = init
            self.gain = nn.Parameter(torch.empty(()))

        def reset_parameters(self, weight):
            nn.init.constant_(self.gain, self.init)

        def delta_weight(self, weight):
            return self.gain * weight

    FACTORIZATIONS.register_module(name='test-gain', module=Gain)
    try:
        plan = build_plan('lora_attn', rank=1, factorization='test-gain', init=0.5)
        layer = adapt_layer('fc', nn.Linear(4, 3).requires_grad_(False), plan.adapters['attn']).eval()
        x = torch.randn(2, 4)
        torch.testing.assert_close(layer(x), nn.functional.linear(x, 1.5 * layer.weight, layer.bias))
        frozen = layer.weight.clone()
        layer.merge()
        torch.testing.assert_close(layer.weight, 1.5 * frozen)
        layer.unmerge()
        assert torch.equal(layer.weight, frozen)
        with pytest.raises(ValueError, match="adapter.gain is not a setting of factorization 'test-gain'"):
            build_plan('lora_attn', factorization='test-gain', gain=2.)
    finally:
        FACTORIZATIONS.module_dict.pop('test-gain')


@pytest.mark.parametrize('name', ['petah2-dora', 'petah2-lokr'])
def test_presets_are_petah2_with_another_factorization(name):
    plan, petah2 = build_plan(**PRESETS[name]), build_plan(**PRESETS['petah2'])
    assert {g: {k: v for k, v in c.items() if k != 'type'} for g, c in plan.adapters.items()} == \
        {g: {k: v for k, v in c.items() if k != 'type'} for g, c in petah2.adapters.items()}
    assert {c['type'] for c in plan.adapters.values()} == {name.split('-')[1]}
    assert preset_name(PRESETS[name]) == name


def test_adapter_files_record_the_settings_and_refuse_another(build_ef, tmp_path):
    source = build_ef(adapter=dict(factorization='lokr', factor=4))
    meta = source.adapter_metadata()['adapters']
    assert meta['conv'] == dict(type='lokr', rank=2, alpha=2., factor=4, decompose_both=False)
    assert build_ef().adapter_metadata()['adapters']['conv'] == dict(type='lora', rank=2, alpha=2.)  # as before
    source.save_adapter(tmp_path / 'lokr.safetensors')
    target = build_ef(adapter=dict(factorization='lokr', factor=4, decompose_both=True))
    with pytest.raises(AdapterFileError, match=r'adapters mismatch \(attn.decompose_both: False in the file, True '
                                               r'in the model; conv.decompose_both'):
        target.load_adapter(tmp_path / 'lokr.safetensors')
    same = build_ef(adapter=dict(factorization='lokr', factor=4))
    same.load_state_dict(source.shared_state_dict(), strict=False)  # the same frozen weights
    same.load_adapter(tmp_path / 'lokr.safetensors')
    assert all(torch.equal(t, source.task_state_dict()[n]) for n, t in same.task_state_dict().items())
