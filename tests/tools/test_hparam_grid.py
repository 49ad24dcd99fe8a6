"""tools/analysis_tools/hparam_grid.py: Table 7's grids, what it refuses, the results file and its FLOPs."""
import argparse
import json
import sys
from pathlib import Path

import mmpretrain
import pytest
import yaml
from mmengine.config import Config

from petah_mm.adapters import is_adapter_key
from petah_mm.tools.studies import hparam_grid
from helpers import CLS_TOY, REPO, build_model

FGVC = REPO / 'configs' / 'fgvc'
TOY = CLS_TOY


def grid_main(monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', ['hparam_grid.py', *map(str, argv)])
    hparam_grid.main()


def test_grid_defaults_follow_table7(tmp_path, monkeypatch, capsys):
    grid_main(monkeypatch, TOY, '--work-dir', tmp_path, '--dry-run')
    written = sorted(tmp_path.glob('*.py'))
    assert len(written) == 3 * 4 * 4  # lr x weight decay x adapter LR factor
    points = set()
    for path in written:
        cfg = Config.fromfile(path)
        points.add((cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay,
                    cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult))
        assert cfg.work_dir == str(tmp_path / path.stem)
    assert points == {(lr, wd, mult) for lr in (0.001, 0.005, 0.01) for wd in (0, 2e-4, 2e-3, 2e-2)
                      for mult in (0.1, 1, 5, 10)}
    assert capsys.readouterr().out.count('tools/train.py') == 48
    frozen = hparam_grid.build_grid('frozen', argparse.Namespace(lr=None, weight_decay=None, lr_mult=None))
    assert {point.lr for point in frozen} == {0.005, 0.01, 0.05} and {p.lr_mult for p in frozen} == {None}


def test_grid_refuses_what_it_cannot_search(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='split is .test. .CUB has no validation split'):
        grid_main(monkeypatch, FGVC / 'ef-l1-petah2_8xb128-200e_cub.py', '--work-dir', tmp_path, '--dry-run')
    frozen = FGVC / 'ef-l1-frozen_8xb128-200e_dtd.py'
    with pytest.raises(ValueError, match="method 'frozen' trains no backbone parameter"):
        grid_main(monkeypatch, frozen, '--work-dir', tmp_path, '--dry-run', '--lr-mult', '1')


def write_scalars(run_dir: Path, accuracy_by_epoch: dict, timestamp: str = '20240101_000000'):
    """What mmengine's LocalVisBackend writes: one JSON line per logged step."""
    path = run_dir / timestamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    lines = [dict(loss=1.0, lr=0.005, epoch=epoch, iter=epoch * 4, step=epoch * 4) for epoch in accuracy_by_epoch]
    lines += [{'accuracy/top1': acc, 'data_time': 0.01, 'time': 0.1, 'step': epoch}
              for epoch, acc in accuracy_by_epoch.items()]
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')


def test_grid_collects_final_accuracy_into_the_results_file(tmp_path, monkeypatch):
    args = ['--work-dir', tmp_path, '--lr', '0.005', '0.01', '--weight-decay', '0', '--lr-mult', '1', '5',
            '--cfg-options', 'train_cfg.max_epochs=8']
    final = {'lr0.005_wd0_mult1': 70.0, 'lr0.005_wd0_mult5': 82.5, 'lr0.01_wd0_mult1': 64.0}
    for point, accuracy in final.items():  # a higher accuracy before the last epoch must not count
        write_scalars(tmp_path / point, {4: 99.0, 8: accuracy})
    write_scalars(tmp_path / 'lr0.01_wd0_mult5', {4: 99.0})  # still running
    with pytest.raises(RuntimeError, match='1 of 4 points .* at step 8 .*: lr0.01_wd0_mult5$'):
        grid_main(monkeypatch, TOY, '--collect', *args)
    write_scalars(tmp_path / 'lr0.01_wd0_mult5', {8: 81.0}, timestamp='20240102_000000')  # resumed, finished
    grid_main(monkeypatch, TOY, '--collect', *args)

    results = json.loads((tmp_path / 'hparam_grid.json').read_text())
    assert set(results) == {'results', 'best'}
    adapters = sum(p.numel() for n, p in build_model(Config.fromfile(TOY)).backbone.named_parameters()
                   if is_adapter_key(n))
    flops = results['best'].pop('flops')
    assert results['best'] == dict(arch='l1', method='petah2', dataset='toy-cls', lr=0.005, weight_decay=0.0,
                                   lr_mult=5.0, accuracy=82.5, params=adapters)
    assert sorted((r['lr'], r['lr_mult'], r['accuracy']) for r in results['results']) == [
        (0.005, 1.0, 70.0), (0.005, 5.0, 82.5), (0.01, 1.0, 64.0), (0.01, 5.0, 81.0)]
    assert all(r['flops'] == flops for r in results['results'])


def test_grid_flops_match_mmpretrain_model_zoo():
    """GFLOPs at the 224 test crop, against mmpretrain's metafile for the same EfficientFormer."""
    metafile = Path(mmpretrain.__file__).parent / '.mim' / 'configs' / 'efficientformer' / 'metafile.yml'
    zoo = {m['Name']: m['Metadata']['FLOPs'] / 1e9 for m in yaml.safe_load(metafile.read_text())['Models']}
    stats = hparam_grid.model_stats(Config.fromfile(FGVC / 'ef-l1-petah2_8xb128-200e_dtd.py'))
    assert stats['flops'] == pytest.approx(zoo['efficientformer-l1_3rdparty_8xb128_in1k'], rel=0.02)
    assert (stats['arch'], stats['method']) == ('l1', 'petah2')
