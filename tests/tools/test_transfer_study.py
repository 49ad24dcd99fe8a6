"""The transfer study: its protocol (LR picked on val only, every seed at the picked LR, test untouched by any
choice), its run configs, and the --quick path end to end through mmengine's Runner."""
import json

import pytest

import petah_mm.tools.transfer_study as study
from petah_mm.tools.transfer_study import METHODS, PROFILES, Profile, combinations, main, run_config


def test_run_config_changes_only_the_runs_settings(tmp_path):
    profile = study.PROFILES['quick']
    cfg = run_config('tf-efficientnet-lite0', 'petah8', 'random', 3e-3, 2, profile, tmp_path / 'data', tmp_path / 'r')
    assert cfg.model.backbone.adapter == METHODS['petah8'] and cfg.model.backbone.backbone.init_cfg is None
    assert cfg.optim_wrapper.optimizer.lr == 3e-3 and cfg.randomness.seed == 2
    assert {cfg[f'{s}_dataloader'].dataset.data_root for s in ('train', 'val', 'test')} == {str(tmp_path / 'data')}
    assert cfg.train_cfg.max_epochs == profile.epochs < cfg.train_cfg.val_interval  # no validation while training
    pretrained = run_config('mobilenetv2-100', 'full', 'pretrained', 1e-3, 0, profile, tmp_path, tmp_path / 'r')
    assert pretrained.model.backbone.backbone.init_cfg.checkpoint == 'pypkg://mobilenet-v2'


def test_protocol_picks_the_lr_on_val_and_reports_test_over_seeds(tmp_path, monkeypatch):
    calls = []

    def fake(cfg, splits):  # val prefers the larger LR, test the smaller: a choice on test would show
        lr, seed = cfg.optim_wrapper.optimizer.lr, cfg.randomness.seed
        calls.append((lr, seed, tuple(splits)))
        return dict(params=7, epoch_s=1.0, val=lr * 1000, test=50 + seed - lr * 1000)

    monkeypatch.setattr(study, 'train_and_evaluate', fake)
    monkeypatch.setitem(study.DATASETS, 'animal', lambda *args, **kwargs: None)
    profile = Profile(('tf-efficientnet-lite0', ), ('animal', ), ('petah2', ), (), seeds=3, epochs=2,
                      counts=(1, 1, 1), lrs=dict(petah2=(1e-3, 3e-3)))
    row, = study.run_study(profile, tmp_path)['summary']
    assert row['lr'] == 3e-3 and row['val'] == 3.0 and row['seeds'] == 3
    assert row['test_mean'] == pytest.approx(50 + 1 - 3.0)  # seeds 0, 1, 2 at the picked LR
    assert calls == [(1e-3, 0, ('val', 'test')), (3e-3, 0, ('val', 'test')), (3e-3, 1, ('test', )),
                     (3e-3, 2, ('test', ))]
    calls.clear()
    study.run_study(profile, tmp_path)  # resumes: every run is in runs.jsonl
    assert calls == []


@pytest.mark.slow
def test_quick_study_through_the_runner(tmp_path):
    results = main(['--quick', '--work-dir', str(tmp_path)])
    rows = {row['method']: row for row in results['summary']}
    assert set(rows) == {'frozen', 'petah2'}
    assert rows['frozen']['params'] == 0 < rows['petah2']['params'] < 100_000  # a few % of 3.4 M
    assert all(0 <= row['test_mean'] <= 100 and row['epoch_s'] > 0 for row in rows.values())
    saved = json.loads((tmp_path / 'transfer_study.json').read_text())
    assert saved['summary'] == results['summary'] and len(saved['runs']) == 2
    assert (tmp_path / 'transfer_study.png').stat().st_size > 0
    assert '| tf-efficientnet-lite0 | animal | pretrained | petah2 |' in (tmp_path / 'transfer_study.md').read_text()


def test_default_study_runs_every_method_pretrained_and_the_two_ends_of_the_range_as_random_controls():
    rows = list(combinations(PROFILES['default']))
    assert [(method, init) for _, _, method, init in rows] == [
        ('frozen', 'pretrained'), ('frozen', 'random'), ('petah1', 'pretrained'), ('petah2', 'pretrained'),
        ('petah8', 'pretrained'), ('full', 'pretrained'), ('full', 'random')]
