"""The dense study: each run is its configs/real config with only the data, work dir and schedule length changed,
evaluated once; the PETAH-2 checkpoints are kept for the release; the --quick path end to end through the Runner."""
import json
from pathlib import Path

import pytest

import petah_mm.tools.dense_study as study


@pytest.mark.parametrize('task', list(study.TASKS))
def test_run_config_changes_only_data_work_dir_and_schedule_length(tmp_path, task):
    profile = study.PROFILES['default']
    cfg = study.run_config(task, 'petah2', profile, tmp_path / 'data', tmp_path / 'run')
    assert {cfg[f'{s}_dataloader'].dataset.data_root for s in ('train', 'test')} == {f'{tmp_path}/data/'}
    loop = cfg.train_cfg
    length = loop.get('max_epochs', loop.get('max_iters'))
    assert length == 12 if task == 'cascade-mask-rcnn' else length == 1600  # the configs' own schedules
    assert cfg.val_cfg is None and cfg.val_dataloader is None  # no validation: evaluated once, by the test
    assert cfg.default_hooks.checkpoint.interval == length and cfg.work_dir == str(tmp_path / 'run')
    assert cfg.model.backbone.backbone.init_cfg.checkpoint == 'pypkg://efficientnet-lite0/features'
    assert cfg.randomness == dict(seed=0, deterministic=True)
    frozen = study.run_config(task, 'frozen', profile, tmp_path / 'data', tmp_path / 'run')
    assert frozen.model.backbone.adapter.method == 'frozen' and frozen.default_hooks.checkpoint is None
    if task == 'cascade-mask-rcnn':
        assert cfg.test_evaluator.ann_file == f'{tmp_path}/data/annotations/instances_val2017.json'
    assert cfg.param_scheduler == study.Config.fromfile(str(study.config_path(task, 'petah2'))).param_scheduler
    full = study.run_config(task, 'full', study.PROFILES['full'], tmp_path, tmp_path / 'run')
    assert full.optim_wrapper.paramwise_cfg.custom_keys == {'backbone': dict(lr_mult=0.1)}
    # --full: 4x the images; the detector keeps its 12 epochs, the segmentor's iterations and decay grow 4x
    if task == 'cascade-mask-rcnn':
        assert full.train_cfg.max_epochs == 12 and full.param_scheduler == cfg.param_scheduler
    else:
        assert full.train_cfg.max_iters == 6400 == full.param_scheduler[0]['end']


def test_markdown_table_has_one_row_per_run():
    runs = [dict(task='cascade-mask-rcnn', method='petah2', metrics={'coco/bbox_mAP': 0.25, 'coco/segm_mAP': 0.5},
                 backbone_params=60982, trainable_params=3391184, train_min=1.25),
            dict(task='semantic-fpn', method='frozen', metrics={'mIoU': 41.234}, backbone_params=0,
                 trainable_params=439371, train_min=0.5)]
    table = study.markdown(runs)
    assert '| cascade-mask-rcnn | petah2 | 0.250 | 0.500 | – | 60,982 | 3,391,184 | 1.2 |' in table
    assert '| semantic-fpn | frozen | – | – | 41.2 | 0 | 439,371 | 0.5 |' in table


@pytest.mark.slow
def test_quick_study_through_the_runner(tmp_path):
    results = study.main(['--quick', '--work-dir', str(tmp_path)])
    runs = {run['task']: run for run in results['runs']}
    assert set(runs) == set(study.TASKS) and {run['method'] for run in runs.values()} == {'petah2'}
    assert 0 < runs['cascade-mask-rcnn']['backbone_params'] == runs['semantic-fpn']['backbone_params'] < 100_000
    assert 0 <= runs['cascade-mask-rcnn']['metrics']['coco/bbox_mAP'] <= 1
    assert 0 <= runs['semantic-fpn']['metrics']['mIoU'] <= 100
    assert all(Path(run['checkpoint']).is_file() for run in runs.values())  # kept for the release
    saved = json.loads((tmp_path / 'dense_study.json').read_text())
    assert saved['runs'] == results['runs']
    assert '| semantic-fpn | petah2 |' in (tmp_path / 'dense_study.md').read_text()
