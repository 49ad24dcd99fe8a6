"""The transfer study: its protocol (LR picked by the mean validation top-1 over seeds, every seed at the picked
LR, test untouched by any choice), the stabiliser, collapse counting, which methods apply to which backbone, linear
probing on cached features against the Runner, and the --quick path end to end (Lite0 and the ViT)."""
import json
import math
from dataclasses import replace

import pytest
import torch
from mmengine.runner import Runner

import petah_mm.tools.studies.transfer_study as study
from petah_mm.datasets import make_animal_classification
from petah_mm.tools.studies import linear_probe
from petah_mm.tools.studies.transfer_study import (METHODS, PROFILES, Profile, applies, collapsed, combinations, main,
                                                   pick_lr, run_config, summarise)
from petah_mm.utils import machine

TINY = Profile({}, ('animal', ), {}, seeds=1, selection_seeds=1, epochs=2, counts=(4, 1, 1))


def test_run_config_changes_only_the_runs_settings(tmp_path):
    profile = PROFILES['quick']
    cfg = run_config('tf-efficientnet-lite0', 'petah8', 'random', 3e-3, 2, profile, tmp_path / 'data', tmp_path / 'r')
    assert cfg.model.backbone.adapter == METHODS['petah8'] and cfg.model.backbone.backbone.init_cfg is None
    assert cfg.optim_wrapper.optimizer.lr == 3e-3 and cfg.randomness.seed == 2
    assert {cfg[f'{s}_dataloader'].dataset.data_root for s in ('train', 'val', 'test')} == {str(tmp_path / 'data')}
    assert cfg.train_cfg.max_epochs == profile.epochs < cfg.train_cfg.val_interval  # no validation while training
    pretrained = run_config('mobilenetv2-100', 'full', 'pretrained', 1e-3, 0, profile, tmp_path, tmp_path / 'r')
    assert pretrained.model.backbone.backbone.init_cfg.checkpoint == 'pypkg://mobilenet-v2'
    # full fine-tuning takes its own config: the backbone at 0.1x the head's LR
    assert pretrained.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    ranks = dict(adapter=dict(method='petah', budget=9, layer_ranks={'timm_model.conv_stem': 2}))
    budget = run_config('tf-efficientnet-lite0', 'petah-budget', 'pretrained', 1e-3, 0, profile, tmp_path, tmp_path,
                        ranks)
    assert budget.model.backbone.adapter == ranks['adapter'] != METHODS['petah-budget']
    vit = run_config('dinov2-vit-s14', 'lora-attn-r16', 'pretrained', 1e-3, 0, profile, tmp_path, tmp_path / 'r')
    assert vit.model.backbone.adapter == dict(method='lora_attn', rank=16)
    assert vit.model.backbone.backbone.init_cfg.checkpoint == 'pypkg://dinov2-vit-s14/features'


def test_the_stabiliser_is_clipping_and_warmup_for_every_method_and_the_switch_removes_both(tmp_path):
    for method in ('frozen', 'petah2', 'full'):
        cfg = run_config('dinov2-vit-s14', method, 'pretrained', 1e-3, 0, PROFILES['default'], tmp_path, tmp_path)
        assert cfg.optim_wrapper.clip_grad == dict(max_norm=1.0, norm_type=2)
        assert [(s.type, s.get('begin', 0), s.get('end')) for s in cfg.param_scheduler] == [
            ('LinearLR', 0, 1), ('CosineAnnealingLR', 1, None)]  # warmup over the first epoch, then the decay
    plain = run_config('tf-efficientnet-lite0', 'petah2', 'pretrained', 1e-3, 0,
                       replace(PROFILES['default'], stabiliser=False), tmp_path, tmp_path)
    assert 'clip_grad' not in plain.optim_wrapper
    assert [(s.type, s.begin) for s in plain.param_scheduler] == [('CosineAnnealingLR', 0)]


def test_methods_that_need_attention_are_skipped_on_a_cnn_by_the_adapters_rule():
    cnn = {method for method in METHODS if applies('tf-efficientnet-lite0', method)}
    assert cnn == {'frozen', 'full', 'petah1', 'petah2', 'petah8', 'petah2-dora', 'petah2-lokr', 'petah-budget'}
    assert all(applies('dinov2-vit-s14', method) for method in METHODS)  # attention, MLP and the patch conv
    full = {(backbone, method) for backbone, _, method, _ in combinations(PROFILES['full'])}
    assert ('dinov2-vit-s14', 'attn-ft') in full and ('mobilenetv2-100', 'attn-ft') not in full
    assert {init for *_, init in combinations(PROFILES['full'])} == {'pretrained', 'random'}


def test_protocol_picks_the_lr_by_the_mean_val_over_seeds_and_reports_test_over_seeds(tmp_path, monkeypatch):
    calls = []

    def fake(cfg, splits):
        # seed 0 alone prefers 1e-3 (val 9 against 5), the mean over seeds 0 and 1 prefers 3e-3 (6 against 5);
        # test prefers 1e-3: a choice on test would show
        lr, seed = cfg.optim_wrapper.optimizer.lr, cfg.randomness.seed
        calls.append((lr, seed, tuple(splits)))
        scores = dict(val={(1e-3, 0): 9, (1e-3, 1): 1, (3e-3, 0): 5, (3e-3, 1): 7}.get((lr, seed)),
                      test=50 + seed - lr * 1000)
        return dict(params=7, epoch_s=1.0, final_loss=0.5, path='runner', **{s: scores[s] for s in splits})

    monkeypatch.setattr(study, 'train_and_evaluate', fake)
    monkeypatch.setitem(study.DATASETS, 'animal', lambda *args, **kwargs: None)
    profile = Profile({'tf-efficientnet-lite0': ('petah2', )}, ('animal', ), {}, seeds=3, selection_seeds=2,
                      epochs=2, counts=(1, 1, 1), lrs=dict(petah2=(1e-3, 3e-3)))
    row, = study.run_study(profile, tmp_path)['summary']
    assert row['lr'] == 3e-3 and row['val'] == 6 and row['seeds'] == 3
    assert row['test_mean'] == pytest.approx(50 + 1 - 3.0)  # seeds 0, 1, 2 at the picked LR
    assert calls == [(1e-3, 0, ('val', 'test')), (1e-3, 1, ('val', 'test')), (3e-3, 0, ('val', 'test')),
                     (3e-3, 1, ('val', 'test')), (3e-3, 2, ('test', ))]
    assert row['collapsed'] == row['collapsed_grid'] == 0 and row['runs_grid'] == 5
    calls.clear()
    study.run_study(profile, tmp_path)  # resumes: every run is in runs.jsonl
    assert calls == []


def test_budget_ranks_are_measured_once_per_backbone_dataset_and_init_and_reused_on_resume(tmp_path, monkeypatch):
    """The allocation runs once for every LR and seed of a row, from the run's own train split, seed RANK_SEED; its
    ranks go into each run's config, its digest and budget into the runs and the row; a resume reads the cache."""
    allocations, trained = [], []

    def fake_allocate(cfg, budget=None, images=256, seed=0):
        allocations.append((cfg.train_dataloader.dataset.data_root, cfg.model.backbone.adapter, images, seed))
        ranks = {'timm_model.conv_stem': 3}
        return dict(adapter=dict(method='petah', budget=1000, layer_ranks=ranks), layer_ranks=ranks, budget=1000,
                    params=995, digest='abcdef012345')

    def fake_train(cfg, splits):
        trained.append(cfg.model.backbone.adapter)
        return dict(params=995, epoch_s=1.0, final_loss=0.5, path='runner', **{s: 50.0 for s in splits})

    monkeypatch.setattr(study.allocate_ranks, 'allocate', fake_allocate)
    monkeypatch.setattr(study, 'train_and_evaluate', fake_train)
    monkeypatch.setitem(study.DATASETS, 'animal', lambda *args, **kwargs: None)
    profile = Profile({'tf-efficientnet-lite0': ('petah-budget', )}, ('animal', ), {}, seeds=3, selection_seeds=2,
                      epochs=2, counts=(1, 1, 1), lrs={'petah-budget': (1e-3, 3e-3)})
    row, = study.run_study(profile, tmp_path)['summary']
    assert allocations == [(str(tmp_path / 'data' / 'animal'), dict(method='petah', budget='petah2'), study.RANK_IMAGES,
                            study.RANK_SEED)]
    assert len(trained) == 5 and all(a == dict(method='petah', budget=1000, layer_ranks={'timm_model.conv_stem': 3})
                                     for a in trained)
    assert (row['budget'], row['ranks_digest'], row['params']) == (1000, 'abcdef012345', 995)
    assert '| 995 (budget 1,000, -0.50%; ranks abcdef012345) |' in study.markdown([row])
    cached = json.loads((tmp_path / 'ranks' / 'tf-efficientnet-lite0_animal_pretrained.json').read_text())
    assert cached['digest'] == 'abcdef012345'
    (tmp_path / 'runs.jsonl').unlink()  # every run again, the ranks from the cache
    study.run_study(profile, tmp_path)
    assert len(allocations) == 1 and len(trained) == 10


def test_pick_lr_takes_the_best_mean_and_the_first_on_a_tie():
    vals = ((1e-3, 60), (1e-3, 10), (3e-3, 50), (3e-3, 49), (1e-2, 49), (1e-2, 50))  # seed 0 alone: 1e-3
    runs = [dict(lr=lr, val=val) for lr, val in vals]
    assert pick_lr(runs) == 3e-3


def test_collapse_is_a_final_loss_within_one_percent_of_ln_classes_and_is_counted_per_row():
    ln10 = math.log(10)
    assert collapsed(ln10, 10) and collapsed(ln10 * 1.0099, 10) and collapsed(ln10 * 0.991, 10)
    assert not collapsed(ln10 * 0.98, 10) and not collapsed(ln10 * 1.02, 10) and not collapsed(0.1, 10)
    assert collapsed(math.log(2), 2) and not collapsed(ln10, 2)

    def record(lr, seed, loss):
        return dict(lr=lr, seed=seed, val=1.0, test=10.0, params=5, epoch_s=1.0, final_loss=loss,
                    collapsed=collapsed(loss, 10))

    every = [record(1e-2, 0, ln10), record(1e-2, 1, ln10), record(3e-3, 0, 0.4), record(3e-3, 1, ln10 + 0.01),
             record(3e-3, 2, 0.3)]
    row, = summarise([(('b', 'd', 'petah8', 'pretrained'), every, 3e-3)])
    assert (row['collapsed'], row['seeds'], row['collapsed_grid'], row['runs_grid']) == (1, 3, 3, 5)
    assert '| 1/3; 3/5 |' in study.markdown([row])


@pytest.fixture(scope='module')
def tiny_animal(tmp_path_factory):
    return make_animal_classification(tmp_path_factory.mktemp('animal') / 'data', num_train_per_class=4,
                                      num_val_per_class=1, num_test_per_class=1)['root']


@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['tf-efficientnet-lite0', 'dinov2-vit-s14'])
def test_linear_probing_on_cached_features_is_the_runners_optimisation(backbone, tiny_animal, tmp_path):
    """One seed, 2 epochs of 2 batches (the last one short), the train pipeline's RandomFlip included, a large LR
    (so that a wrong batch, flip or schedule shows): the same head weights, final loss and top-1 as the Runner."""
    cfg = run_config(backbone, 'frozen', 'pretrained', 3e-2, 3, TINY, tiny_animal, tmp_path / 'run')
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline][-2:] == ['RandomFlip', 'PackInputs']
    runner = Runner.from_cfg(cfg.copy())
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').mean(len(runner.train_dataloader))
    weight, bias = runner.model.head.fc.weight.detach(), runner.model.head.fc.bias.detach()
    val, test = runner.val()['accuracy/top1'], runner.test()['accuracy/top1']

    model = linear_probe.build_model(cfg)
    probe = linear_probe.train_probe(model, cfg, linear_probe.extract_splits(model, cfg))
    # features are summed in other batches than the Runner's: rounding apart, nothing else (one weight of 12,800
    # differed by 2.1e-5 on an AVX-512 EPYC; an LR 1 % larger moves 95 % of them outside this tolerance)
    torch.testing.assert_close(model.head.fc.weight, weight, rtol=1e-3, atol=5e-5)
    torch.testing.assert_close(model.head.fc.bias, bias, rtol=1e-3, atol=5e-5)
    assert probe['final_loss'] == pytest.approx(loss, rel=1e-4)
    assert (probe['val'], probe['test']) == (pytest.approx(val), pytest.approx(test))


def test_linear_probing_refuses_augmentation_it_cannot_replay():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=64), dict(type='PackInputs')]
    with pytest.raises(ValueError, match='RandomResizedCrop'):
        linear_probe._views(pipeline)
    late = [dict(type='LoadImageFromFile'), dict(type='RandomFlip', prob=0.5), dict(type='Resize', scale=(8, 8)),
            dict(type='PackInputs')]
    with pytest.raises(ValueError, match='right before PackInputs'):
        linear_probe._views(late)


@pytest.mark.slow
def test_quick_study_through_the_runner_covers_the_cnn_and_the_vit(tmp_path):
    results = main(['--quick', '--work-dir', str(tmp_path)])
    rows = {(row['backbone'], row['method']): row for row in results['summary']}
    assert set(rows) == {(b, m) for b in ('tf-efficientnet-lite0', 'dinov2-vit-s14')
                         for m in ('frozen', 'petah2', 'petah-budget')}
    for backbone in ('tf-efficientnet-lite0', 'dinov2-vit-s14'):  # PETAH-2's count, spent on measured ranks
        budget, petah2 = rows[backbone, 'petah-budget'], rows[backbone, 'petah2']['params']
        assert budget['budget'] == petah2 and 0.99 * petah2 <= budget['params'] <= petah2
        ranks = json.loads((tmp_path / 'ranks' / f'{backbone}_animal_pretrained.json').read_text())
        assert ranks['digest'] == budget['ranks_digest'] and ranks['images'] == 20  # the whole tiny train split
        assert len(set(ranks['layer_ranks'].values())) > 1
    assert rows['tf-efficientnet-lite0', 'frozen']['params'] == 0 < rows['tf-efficientnet-lite0', 'petah2']['params']
    assert rows['tf-efficientnet-lite0', 'petah2']['params'] < 100_000  # a few % of 3.4 M
    # rank 8 on the 24 attention layers (qkv 384->1152, proj 384->384) and rank 2 on the 14x14 patch conv
    attn = 12 * (8 * (384 + 1152) + 8 * (384 + 384))
    assert rows['dinov2-vit-s14', 'petah2']['params'] == attn + 2 * (3 * 14 * 14 + 384)
    runs = {run['method']: run for run in results['runs'] if run['backbone'] == 'dinov2-vit-s14'}
    assert runs['frozen']['path'] == 'cached-probe'
    assert runs['petah2']['path'] == runs['petah-budget']['path'] == 'runner'
    assert all(0 <= row['test_mean'] <= 100 and row['epoch_s'] > 0 and row['collapsed'] in (0, 1)
               for row in rows.values())
    saved = json.loads((tmp_path / 'transfer_study_quick.json').read_text())
    assert saved['summary'] == results['summary'] and len(saved['runs']) == 6
    assert (tmp_path / 'transfer_study_quick.png').stat().st_size > 0
    table = (tmp_path / 'transfer_study_quick.md').read_text()
    assert '| dinov2-vit-s14 | animal | pretrained | petah2 |' in table and 'collapsed' in table
    # the CPU its s / epoch ran on
    assert saved['machine']['cpu'] == machine.describe()['cpu'] and f'CPU: {saved["machine"]["cpu"]}' in table
    # a narrowed summary under its own name reuses the runs and leaves the others' files alone
    narrowed = main(['--quick', '--work-dir', str(tmp_path), '--methods', 'frozen', '--out-name', 'frozen_only'])
    assert {row['method'] for row in narrowed['summary']} == {'frozen'}
    assert json.loads((tmp_path / 'frozen_only.json').read_text())['summary'] == narrowed['summary']
    assert not (tmp_path / 'transfer_study_quick_selected.json').exists()
    assert json.loads((tmp_path / 'transfer_study_quick.json').read_text())['summary'] == results['summary']


@pytest.mark.parametrize('name', ['../outside', 'a/b', '', '.hidden'])
def test_out_name_outside_the_work_dir_is_refused_by_name(name, tmp_path):
    with pytest.raises(ValueError, match='--out-name'):
        main(['--quick', '--work-dir', str(tmp_path), '--out-name', name])
    assert not list(tmp_path.glob('*.json'))


def test_default_study_rows_and_sizes():
    rows = list(combinations(PROFILES['default']))
    lite0 = [(dataset, method, init) for backbone, dataset, method, init in rows if backbone == 'tf-efficientnet-lite0']
    for dataset in ('animal', 'animal-plain'):
        assert [(m, i) for d, m, i in lite0 if d == dataset] == [
            ('frozen', 'pretrained'), ('frozen', 'random'), ('petah2', 'pretrained'), ('full', 'pretrained'),
            ('petah-budget', 'pretrained')]
    assert [(d, m, i) for b, d, m, i in rows if b == 'dinov2-vit-s14'] == [
        ('animal', 'frozen', 'pretrained'), ('animal', 'frozen', 'random'), ('animal', 'petah2', 'pretrained'),
        ('animal', 'full', 'pretrained'), ('animal', 'petah-budget', 'pretrained')]
    for backbone in ('tf-efficientnet-lite0', 'dinov2-vit-s14'):  # petah-budget at petah2's LRs
        assert study.lr_grid(PROFILES['default'], backbone, 'petah-budget') == study.lr_grid(
            PROFILES['default'], backbone, 'petah2')
    full = list(combinations(PROFILES['full']))
    assert all(study.lr_grid(PROFILES['full'], backbone, method) for backbone, _, method, _ in full)
    default = PROFILES['default']
    assert default.selection_seeds >= 2 and default.seeds >= 3 and default.stabiliser
    # the module docstring's sizes: 80 steps of batch 32 per run; 30 Lite0 and 15 ViT Runner runs
    assert default.epochs * -(-default.counts[0] * 10 // 32) == 80
    runner_runs = {backbone: 0 for backbone in default.methods}
    for backbone, _, method, _ in rows:
        if method != 'frozen':
            grid = study.lr_grid(default, backbone, method)
            runner_runs[backbone] += len(grid) * default.selection_seeds + default.seeds - default.selection_seeds
    assert runner_runs == {'tf-efficientnet-lite0': 30, 'dinov2-vit-s14': 15}


def test_select_narrows_a_profile_to_named_rows_and_refuses_unknown_names():
    full = PROFILES['full']
    assert study.select(full) is full
    chosen = study.select(full, backbones=['dinov2-vit-s14'], datasets=['animal'], methods=['attn-ft', 'lora-attn-r8'])
    assert list(combinations(chosen)) == [
        ('dinov2-vit-s14', 'animal', 'attn-ft', 'pretrained'), ('dinov2-vit-s14', 'animal', 'attn-ft', 'random'),
        ('dinov2-vit-s14', 'animal', 'lora-attn-r8', 'pretrained'),
        ('dinov2-vit-s14', 'animal', 'lora-attn-r8', 'random')]
    # the rows keep the profile's seeds and epochs, so their runs share names with the profile's
    assert (chosen.seeds, chosen.epochs, chosen.counts) == (full.seeds, full.epochs, full.counts)
    pretrained = study.select(full, backbones=['dinov2-vit-s14'], datasets=['animal'], methods=['attn-ft'],
                              pretrained_only=True)
    assert list(combinations(pretrained)) == [('dinov2-vit-s14', 'animal', 'attn-ft', 'pretrained')]
    with pytest.raises(ValueError, match=r'--methods attn-fine-tune: not in this profile; choose from .*attn-ft'):
        study.select(full, methods=['attn-fine-tune'])
    with pytest.raises(ValueError, match='--datasets cars: not in this profile'):
        study.select(PROFILES['default'], datasets=['cars'])
