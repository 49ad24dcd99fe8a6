"""benchmark.py's rows for unmerged inference with the measured forms, and the peer row of peft's LoRA (tiny sizes:
these check the tool, not the numbers)."""
import argparse
import json
import subprocess
import sys

import pytest
import torch
from mmpretrain.models.backbones.efficientformer import Meta4D, Pooling

from petah_mm.tools.analysis.benchmark import ablations, report, training
from petah_mm.tools.analysis.benchmark.common import backbone_for
from petah_mm.tools.analysis.benchmark.inference import AVGPOOL, FLOPS_RULE, inference, inference_models

ARGS = dict(config=None, arch='l1', size=32, device='cpu', inference_batches=[1], amp=False, warmup=0, repeats=1,
            rounds=1, ablations=[])


@pytest.fixture(scope='module')
def both_rules(tmp_path_factory):
    """One inference run with both rules, its choices cached in a directory of its own."""
    cache = tmp_path_factory.mktemp('cache')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('PETAH_MM_CACHE', str(cache))
        mp.delenv('PETAH_MM_UNMERGED_FORMS', raising=False)
        rows, forms = inference(argparse.Namespace(**ARGS, unmerged_forms='both'))
    return rows, forms, cache


@pytest.mark.slow
def test_unmerged_rows_use_the_measured_forms_and_the_flops_rule_rows_compare(both_rules):
    rows, forms, cache = both_rules
    assert set(forms) == {'petah1 unmerged, batch 1', 'petah2 unmerged, batch 1'}
    first, second = forms.values()
    for summary in (first, second):
        assert summary['rule'] == 'measured' and summary['cache'].startswith(str(cache))
    assert first['cached'] == 0 and first['measured'] > first['signatures_measured'] > 0
    # PETAH-2 shares PETAH-1's attention LoRA (rank 8): those layers take the cached choice
    assert second['cached'] > 0 and second['measured'] + second['cached'] == first['measured']
    for n in (1, 2):
        for name in (f'petah{n} unmerged, batch 1', f'petah{n} unmerged{FLOPS_RULE}, batch 1'):
            assert rows[name]['ratio_to_merged'] == pytest.approx(rows[name]['ms'] / rows[f'petah{n} merged, batch 1']
                                                                  ['ms'])
    assert len(rows) == 7
    table = '\n'.join(report.forms_lines(forms))
    assert 'petah2 unmerged, batch 1: measured forms' in table and str(cache) in table


@pytest.mark.slow
def test_the_flops_rule_alone_measures_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv('PETAH_MM_CACHE', str(tmp_path))
    rows, forms = inference(argparse.Namespace(**ARGS, unmerged_forms='flops'))
    assert forms == {} and len(rows) == 5 and not list(tmp_path.rglob('*.json'))


def token_mixers(backbone) -> set:
    return {type(block.token_mixer) for block in backbone.modules() if isinstance(block, Meta4D)}


def test_the_pooling_ablation_runs_mmpretrains_token_mixer_in_training_and_inference(tmp_path, monkeypatch):
    monkeypatch.setenv('PETAH_MM_CACHE', str(tmp_path))
    args = argparse.Namespace(**dict(ARGS, ablations=['pooling']), unmerged_forms='measured')
    models = inference_models(args)
    for name in ('plain', 'petah2 merged', 'petah2 unmerged'):
        assert token_mixers(models[name + AVGPOOL]) == {Pooling} and Pooling not in token_mixers(models[name])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the same weights: the same features, up to rounding
        torch.testing.assert_close(models['petah2 unmerged' + AVGPOOL](x)[-1], models['petah2 unmerged'](x)[-1])
    rows, forms = inference(args)
    assert len(rows) == 8 and rows[f'plain{AVGPOOL}, batch 1']['ratio'] == (rows[f'plain{AVGPOOL}, batch 1']['ms']
                                                                           / rows['plain, batch 1']['ms'])
    unmerged = rows[f'petah2 unmerged{AVGPOOL}, batch 1']
    assert unmerged['ratio_to_merged'] == unmerged['ms'] / rows[f'petah2 merged{AVGPOOL}, batch 1']['ms']
    twin = forms[f'petah2 unmerged{AVGPOOL}, batch 1']  # the same layers: its forms come from the cache
    assert twin['rule'] == 'measured' and twin['measured'] == 0 and twin['cached'] > 0
    trained = backbone_for(args, 'petah2')
    ablations.undo(trained, 'pooling')
    assert token_mixers(trained) == {Pooling}
    with pytest.raises(ValueError, match='has no pooling token mixer'):  # not a silent copy of the petah2 row
        ablations.undo(trained, 'pooling')


def test_peer_margins_are_pefts_over_petah2s():
    peft = dict(ms=300., ms_by_round=[300., 480., 400.], peak_gb=3., model_gb=1.)
    petah = dict(ms=200., ms_by_round=[250., 200., 900.], peak_gb=2., model_gb=0.5)
    margins = training.peer_margins(peft, petah)
    assert margins == dict(time_margin=1.5, median_time_margin=1.6, paired_time_margin=1.2, memory_margin=1.5,
                           step_memory_margin=pytest.approx(2 / 1.5))  # paired: 1.2, 2.4 and 0.44
    size = dict(trainable=1, adapter_mb=0., gflops_merged=1., gflops_unmerged=1.)
    rows = {'petah2': dict(petah, method='petah2'), 'peft lora': dict(peft, method='petah2', **margins)}
    lines = report.training_lines(dict(training=rows, sizes={'petah2': size}, switch_ms=1.), 'peak RSS')
    assert ('peft lora: petah2 trains 1.50x as fast (1.60x by the median rounds, 1.20x by the median ratio within a '
            'round), with 1.50x less peak memory (1.33x less memory of the step itself).') in '\n'.join(lines)


PEFT_EQUALS_PETAH2 = '''
import copy, json, sys, torch
from mmengine.registry import MODELS
from petah_mm.adapters import adapted_layers, preset
from petah_mm.testing import randomise_adapters
from petah_mm.tools.analysis.benchmark import ablations
backbone = MODELS.build(dict(type='PETAHEfficientFormer', arch='l1', out_indices=[3], adapter=preset('petah2')))
randomise_adapters(backbone)
backbone.eval()
ours = {name: layer.adapter for name, layer in adapted_layers(backbone).items()}
theirs = copy.deepcopy(backbone)
ablations.peft_lora(theirs)
with torch.no_grad():
    for name, adapter in ours.items():
        layer = theirs.get_submodule(name)
        layer.lora_A['default'].weight.copy_(adapter.lora_A.view_as(layer.lora_A['default'].weight))
        layer.lora_B['default'].weight.copy_(adapter.lora_B.view_as(layer.lora_B['default'].weight))
    x = torch.randn(1, 3, 64, 64)
    a, b = backbone(x)[-1], theirs.eval()(x)[-1]
trainable = {n: p.numel() for n, p in theirs.named_parameters() if p.requires_grad}
print(json.dumps(dict(err=(a - b).abs().max().item(), scale=a.abs().max().item(), layers=len(ours),
                      peft_layers=sum(type(m).__module__.startswith('peft') for m in theirs.modules()
                                      if hasattr(m, 'lora_A')),
                      trainable=sum(trainable.values()), lora_only=all('lora_' in n for n in trainable),
                      ours=sum(p.numel() for a in ours.values() for p in a.parameters()))))
'''


@pytest.mark.slow
def test_the_peft_row_is_pefts_lora_on_petah2s_targets_and_ranks():
    """Same factor values in both: peft's LoRA on the same layers computes petah2's backbone, and trains peft's
    factors only, as many as petah2's LoRA factors."""
    if not (ablations.peft_dir() / 'peft').is_dir():
        pytest.skip(f'peft 0.21 is not installed in {ablations.peft_dir()} (tools/install.sh installs it)')
    proc = subprocess.run([sys.executable, '-c', PEFT_EQUALS_PETAH2], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['peft_layers'] == result['layers'] > 0
    assert result['lora_only'] and result['trainable'] == result['ours']
    assert result['err'] <= 1e-4 * result['scale'], result
