"""The measured choice of LoRA's unmerged inference form: cached per machine, refused when damaged, used only in
eager CPU forwards of a tuned model, and changing the speed only, never the result."""
import json
import time
from unittest import mock

import pytest
import torch
from torch import nn

from petah_mm.adapters import adapt_layer, form_choice
from petah_mm.adapters.form_choice import (cache_path, form_key, layer_inputs, load_choices, machine_key,
                                           measure_in_place, signature, tune_unmerged_forms)

CPUINFO = 'processor\t: 0\nmodel name\t: {}\nflags\t\t: fpu sse2 avx2 {}\n'


class Toy(nn.Module):
    """A 3×3 conv and a linear on its tokens, both LoRA-adapted, B random (the forms differ by the delta)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = adapt_layer('conv', nn.Conv2d(4, 8, 3, padding=1).requires_grad_(False), dict(type='lora', rank=2))
        self.fc = adapt_layer('fc', nn.Linear(8, 6).requires_grad_(False), dict(type='lora', rank=2, alpha=4.))
        for layer in (self.conv, self.fc):
            nn.init.normal_(layer.adapter.lora_B)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(2).transpose(1, 2))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PETAH_MM_CACHE', str(tmp_path))
    monkeypatch.delenv(form_choice.MODE_VARIABLE, raising=False)
    return tmp_path


def fixed_choice(form, conv_forms=False):
    """measure_in_place as if ``form`` had been measured fastest for every layer signature."""
    times = dict(thin_ms=1. + (form != 'thin'), fused_ms=1. + (form != 'fused'))
    if conv_forms:
        times.update(thin_conv_ms=1. + (form != 'thin_conv'), fused_conv_ms=1. + (form != 'fused_conv'))
    return mock.patch.object(form_choice, 'measure_in_place', autospec=True,
                             side_effect=lambda model, inputs, pending, budget_s: {
                                 name: dict(form=form, **times) for name, _ in pending.values()})


def forms_run(model, x):
    """Which form each layer ran in one eager forward: 'thin' or 'fused'."""
    calls = {}
    for name in ('conv', 'fc'):
        adapter = getattr(model, name).adapter
        calls[name] = mock.patch.object(adapter, 'thin_forward', wraps=adapter.thin_forward)
    with calls['conv'] as conv, calls['fc'] as fc, torch.no_grad():
        model(x)
    return {'conv': 'thin' if conv.called else 'fused', 'fc': 'thin' if fc.called else 'fused'}


def test_measured_choices_round_trip_through_the_cache(cache):
    model, x = Toy().eval(), torch.randn(1, 4, 5, 5)
    summary = tune_unmerged_forms(model, x)
    assert summary['rule'] == 'measured' and summary['measured'] == summary['signatures_measured'] == 2
    path = cache_path(machine_key())
    assert summary['cache'] == str(path) and path.parent.parent == cache
    stored = json.loads(path.read_text())
    assert stored['machine'] == machine_key() and len(stored['choices']) == 2
    tokens = torch.randn(1, 8, 25).transpose(1, 2)  # what the conv hands the linear: strided tokens
    expected = {name: stored['choices'][signature(getattr(model, name), inp)]['form']
                for name, inp in (('conv', x), ('fc', tokens))}
    fresh = Toy().eval()
    with mock.patch.object(form_choice, 'measure_in_place', side_effect=AssertionError('measured again')):
        again = tune_unmerged_forms(fresh, x)
    assert again['cached'] == 2 and again['measured'] == again['signatures_measured'] == 0
    for name, form in expected.items():
        assert list(getattr(fresh, name).adapter.measured_forms.values()) == [form]


def test_the_choice_is_what_runs_and_changes_nothing_but_speed(cache):
    x = torch.randn(2, 4, 5, 5)
    outputs = {}
    for form in ('thin', 'fused'):
        for path in cache.rglob('*.json'):
            path.unlink()
        model = Toy().eval()
        with fixed_choice(form):
            tune_unmerged_forms(model, x)
        assert forms_run(model, x) == {'conv': form, 'fc': form}
        with torch.no_grad():
            outputs[form] = model(x)
    with torch.no_grad():
        for layer in (model.conv, model.fc):
            layer.merge()
        merged = model(x)
    scale = merged.abs().max().item()
    for out in outputs.values():
        torch.testing.assert_close(out, merged, rtol=0, atol=1e-5 * scale)


def test_other_inputs_traces_and_cuda_keep_the_flops_rule(cache):
    """A bucket of positions or a dtype never measured, and a trace, take the FLOPs rule; so does a model whose
    layers are not on the CPU (a CUDA one, here one on the meta device)."""
    model, x = Toy().eval(), torch.randn(1, 4, 5, 5)
    flops_rule = forms_run(model, x)
    opposite = {'thin': 'fused', 'fused': 'thin'}
    assert flops_rule['conv'] == flops_rule['fc']  # one opposite choice for both
    with fixed_choice(opposite[flops_rule['conv']]):
        tune_unmerged_forms(model, x)
    assert forms_run(model, x) != flops_rule
    assert forms_run(model, torch.randn(4, 4, 9, 9)) == flops_rule  # another bucket
    with mock.patch.object(model.conv.adapter, 'thin_forward', wraps=model.conv.adapter.thin_forward) as thin:
        torch.jit.trace(model, x, check_trace=False)
    assert thin.called == (flops_rule['conv'] == 'thin')
    key = form_key(x, model.conv.output_positions(x))
    assert key[1] == torch.float32
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert form_key(x, 25)[1] == torch.bfloat16  # autocast's dtype is measured apart
    summary = tune_unmerged_forms(Toy().eval().to('meta'), x.to('meta'))  # as on CUDA: another device
    assert summary == dict(rule='flops', why='device meta: measured on the CPU only')


def test_measuring_turned_off_leaves_the_flops_rule(cache, monkeypatch):
    monkeypatch.setenv(form_choice.MODE_VARIABLE, 'flops')
    model = Toy().eval()
    with mock.patch.object(form_choice, 'measure_in_place', side_effect=AssertionError('measured')):
        summary = tune_unmerged_forms(model, torch.randn(1, 4, 5, 5))
    assert summary == dict(rule='flops', why=f'{form_choice.MODE_VARIABLE}=flops')
    assert not model.conv.adapter.measured_forms and not list(cache.rglob('*.json'))
    monkeypatch.setenv(form_choice.MODE_VARIABLE, 'fast')
    with pytest.raises(ValueError, match=f'{form_choice.MODE_VARIABLE}=.fast.*measure.*flops'):
        tune_unmerged_forms(model, torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize('budget_s, rounds', [(-1., form_choice.MIN_ROUNDS), (1e9, form_choice.MAX_ROUNDS)])
def test_the_budget_bounds_the_rounds(cache, budget_s, rounds):
    """One forward to see the layers' inputs, then rounds of one forward per form: at least MIN_ROUNDS, more while
    under the budget, at most MAX_ROUNDS."""
    model = Toy().eval()
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    summary = tune_unmerged_forms(model, torch.randn(1, 4, 5, 5), budget_s=budget_s)
    assert len(forwards) == 1 + rounds * len(form_choice.FORMS)
    assert summary['measured'] == summary['signatures_measured'] == 2


@pytest.mark.parametrize('slow', ['thin', 'fused'])
def test_the_form_slow_in_the_model_is_not_chosen(cache, slow):
    """Each layer is timed inside the model's forwards, in every form: a form made slow there loses, in both layers."""
    model = Toy().eval()
    for layer in (model.conv, model.fc):
        original = getattr(layer.adapter, f'{slow}_forward')

        def slowed(*args, original=original):
            time.sleep(0.005)
            return original(*args)

        setattr(layer.adapter, f'{slow}_forward', slowed)
    tune_unmerged_forms(model, torch.randn(1, 4, 5, 5))
    faster = {'thin': 'fused', 'fused': 'thin'}[slow]
    assert [list(layer.adapter.measured_forms.values()) for layer in (model.conv, model.fc)] == [[faster]] * 2
    stored = json.loads(cache_path(machine_key()).read_text())['choices']
    assert all(entry[f'{slow}_ms'] > 5 > entry[f'{faster}_ms'] for entry in stored.values())


class ToyWithANormAfter(Toy):
    """Toy with an op between its layers that is slow after the conv ran fused: as when building W + ΔW evicts the
    activations the next norm reads."""

    def __init__(self):
        super().__init__()
        self.evicted = False
        fused_forward = self.conv.adapter.fused_forward

        def fused_and_evicting(*args):
            self.evicted = True
            return fused_forward(*args)

        self.conv.adapter.fused_forward = fused_and_evicting

    def forward(self, x):
        x = self.conv(x)
        if self.evicted:
            self.evicted = False
            time.sleep(0.005)
        return self.fc(x.flatten(2).transpose(1, 2))


def test_what_a_form_costs_the_ops_after_it_counts(cache):
    """A layer's time runs to the next adapted layer's start: a form fast in itself that slows what follows loses."""
    model, x = ToyWithANormAfter().eval(), torch.randn(1, 4, 5, 5)
    tune_unmerged_forms(model, x)
    assert list(model.conv.adapter.measured_forms.values()) == ['thin']
    [conv_choice] = [entry for name, entry in json.loads(cache_path(machine_key()).read_text())['choices'].items()
                     if name.startswith('AdaptedConv2d')]
    assert conv_choice['fused_ms'] > 5 > conv_choice['thin_ms']


def test_a_layer_whose_choice_is_cached_still_ends_the_span_before_it(cache):
    """Only the conv is measured, the linear's choice coming from the cache: the conv's time ends where the linear
    starts, so the linear's own time (here a slow forward) is not counted as the conv's."""
    model, x = Toy().eval(), torch.randn(1, 4, 5, 5)
    tune_unmerged_forms(model, x)
    path, key = cache_path(machine_key()), machine_key()
    linear_only = {name: entry for name, entry in load_choices(path, key).items() if name.startswith('AdaptedLinear')}
    form_choice.save_choices(path, key, linear_only)
    linear_forward = model.fc.forward

    def slow_linear(x):
        time.sleep(0.02)
        return linear_forward(x)

    with mock.patch.object(model.fc, 'forward', side_effect=slow_linear):
        summary = tune_unmerged_forms(model, x)
    assert (summary['measured'], summary['cached']) == (1, 1)
    [conv_choice] = [entry for name, entry in load_choices(path, key).items() if name.startswith('AdaptedConv2d')]
    assert conv_choice['thin_ms'] < 10 and conv_choice['fused_ms'] < 10, conv_choice


class ToySkippingItsLinear(Toy):
    """Calls its linear in the first forward only: a forward that changes from call to call."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        x = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(x) if self.calls == 1 else x


def test_a_forward_that_changes_between_calls_is_refused_by_name(cache):
    with pytest.raises(RuntimeError, match=r'AdaptedLinear \(6, 8\).* ran in the first forward but not.*flops'):
        tune_unmerged_forms(ToySkippingItsLinear().eval(), torch.randn(1, 4, 5, 5))
    assert not list(cache.rglob('*.json'))


def test_a_failed_measurement_leaves_the_tables_and_the_cache_as_they_were(cache):
    model, x = Toy().eval(), torch.randn(1, 4, 5, 5)
    key = form_key(x, model.conv.output_positions(x))
    model.conv.adapter.measured_forms[key] = 'fused'
    with mock.patch.object(model.fc.adapter, 'fused_forward', side_effect=RuntimeError('out of memory')):
        with pytest.raises(RuntimeError, match='out of memory'):
            tune_unmerged_forms(model, x)
    assert model.conv.adapter.measured_forms == {key: 'fused'} and not model.fc.adapter.measured_forms
    assert not list(cache.rglob('*.json'))


def test_the_key_holds_the_cpu_its_isa_torch_and_threads(cache):
    epyc = machine_key(CPUINFO.format('AMD EPYC 9R14', 'avx512f avx512_bf16'))
    assert epyc['cpu'] == 'AMD EPYC 9R14' and epyc['flags'] == ['avx2', 'avx512f', 'avx512_bf16']
    assert epyc['torch'] == torch.__version__ and epyc['threads'] == torch.get_num_threads()
    others = [machine_key(CPUINFO.format('Intel Xeon', 'avx512f avx512_bf16')),
              machine_key(CPUINFO.format('AMD EPYC 9R14', 'avx512f'))]
    paths = {cache_path(key) for key in [epyc] + others}
    assert len(paths) == 3 and all(path.parent == cache / 'unmerged_forms' for path in paths)


@pytest.mark.parametrize('content', [b'{"format": ', b'\xff\xfe', b'[]', b'{"format": "petah_mm unmerged forms 0", '
                                     b'"machine": {}, "choices": {}}', 'choices', 'machine', 'form', 'times',
                                     'conv form of two'])
def test_a_damaged_cache_is_refused_by_name(cache, content):
    key = machine_key()
    path = cache_path(key)
    path.parent.mkdir(parents=True)
    good = dict(format=form_choice.CACHE_FORMAT, machine=key, choices={'x': dict(form='thin', thin_ms=1., fused_ms=2.)})
    if content == 'choices':
        content = json.dumps(dict(good, choices=[])).encode()
    elif content == 'machine':
        content = json.dumps(dict(good, machine=dict(key, cpu='another CPU'))).encode()
    elif content == 'form':
        content = json.dumps(dict(good, choices={'x': dict(form='branch', thin_ms=1., fused_ms=2.)})).encode()
    elif content == 'times':
        content = json.dumps(dict(good, choices={'x': dict(form='thin', thin_ms=-1., fused_ms=2.)})).encode()
    elif content == 'conv form of two':
        content = json.dumps(dict(good, choices={'x': dict(form='fused_conv', thin_ms=1., fused_ms=2.)})).encode()
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f'{path}.*delete the file'):
        tune_unmerged_forms(Toy().eval(), torch.randn(1, 4, 5, 5))
    path.write_bytes(json.dumps(good).encode())
    assert load_choices(path, key) == good['choices']
    four = {'y': dict(form='fused_conv', thin_ms=1., fused_ms=2., thin_conv_ms=3., fused_conv_ms=.5)}
    path.write_bytes(json.dumps(dict(good, choices=four)).encode())
    assert load_choices(path, key) == four


def pointwise_model():
    torch.manual_seed(0)
    layer = adapt_layer('pw', nn.Conv2d(6, 10, 1).requires_grad_(False), dict(type='lora', rank=2))
    nn.init.normal_(layer.adapter.lora_B)
    return nn.Sequential(layer).eval()


def test_a_pointwise_conv_also_measures_its_forms_as_convolutions(cache):
    """A 1×1 conv runs both forms as matrix products unless oneDNN's convolution was measured faster; the
    convolution forms are timed as convolutions, and the one chosen runs, with the same result."""
    x = torch.randn(2, 6, 7, 7)
    model = pointwise_model()
    layer = model[0]
    with mock.patch.object(torch.nn.Conv2d, '_conv_forward', autospec=True,
                           side_effect=nn.Conv2d._conv_forward) as conv, torch.no_grad():
        pending = layer_inputs(model, [layer], (x, ))
        [choice] = measure_in_place(model, (x, ), pending, budget_s=0.).values()
    assert set(choice) == {'form', 'thin_ms', 'fused_ms', 'thin_conv_ms', 'fused_conv_ms'}
    assert conv.called and not layer.adapter.measured_forms  # the timing leaves no choice behind
    with torch.no_grad():
        layer.merge()
        merged = model(x)
        layer.unmerge()
    for form in ('thin', 'fused', 'thin_conv', 'fused_conv'):
        for path in cache.rglob('*.json'):
            path.unlink()
        model[0].adapter.measured_forms.clear()
        with fixed_choice(form, conv_forms=True):
            tune_unmerged_forms(model, x)
        with mock.patch.object(torch.nn.Conv2d, '_conv_forward', autospec=True,
                               side_effect=nn.Conv2d._conv_forward) as conv, torch.no_grad():
            out = model(x)
        assert conv.called == form.endswith('_conv'), form
        torch.testing.assert_close(out, merged, rtol=1e-5, atol=1e-5)
