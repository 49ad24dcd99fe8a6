"""The dense study: each run is its configs/real config with only the data, work dir and schedule length changed,
evaluated once; the PETAH-2 checkpoints are kept for the release; the --quick path end to end through the Runner."""
import json
from pathlib import Path

import pytest

import petah_mm.tools.studies.dense_study as study
from petah_mm.utils import machine

WEIGHTS = {'tf-efficientnet-lite0': 'pypkg://efficientnet-lite0/features',
           'dinov2-vit-s14': 'pypkg://dinov2-vit-s14/features'}


@pytest.mark.parametrize('backbone', list(study.METHODS))
@pytest.mark.parametrize('task', list(study.TASKS))
def test_run_config_changes_only_data_work_dir_and_schedule_length(tmp_path, task, backbone):
    profile = study.PROFILES['default']
    cfg = study.run_config(task, 'petah2', profile, tmp_path / 'data', tmp_path / 'run', backbone)
    assert {cfg[f'{s}_dataloader'].dataset.data_root for s in ('train', 'test')} == {f'{tmp_path}/data/'}
    loop = cfg.train_cfg
    length = loop.get('max_epochs', loop.get('max_iters'))
    # the configs' own schedules; the ViT's are half the CNN's
    own_lengths = {('cascade-mask-rcnn', 'tf-efficientnet-lite0'): 12, ('semantic-fpn', 'tf-efficientnet-lite0'): 1600,
                   ('cascade-mask-rcnn', 'dinov2-vit-s14'): 6, ('semantic-fpn', 'dinov2-vit-s14'): 800}
    assert length == own_lengths[task, backbone]
    assert cfg.val_cfg is None and cfg.val_dataloader is None  # no validation: evaluated once, by the test
    assert cfg.default_hooks.checkpoint.interval == length and cfg.work_dir == str(tmp_path / 'run')
    assert cfg.model.backbone.backbone.init_cfg.checkpoint == WEIGHTS[backbone]
    assert cfg.randomness == dict(seed=0, deterministic=True)
    frozen = study.run_config(task, 'frozen', profile, tmp_path / 'data', tmp_path / 'run', backbone)
    assert frozen.model.backbone.adapter.method == 'frozen' and frozen.default_hooks.checkpoint is None
    if task == 'cascade-mask-rcnn':
        assert cfg.test_evaluator.ann_file == f'{tmp_path}/data/annotations/instances_val2017.json'
    own = study.Config.fromfile(str(study.config_path(task, 'petah2', backbone)))
    assert cfg.param_scheduler == own.param_scheduler
    full = study.run_config(task, 'full', study.PROFILES['full'], tmp_path, tmp_path / 'run', backbone)
    assert full.optim_wrapper.paramwise_cfg.custom_keys == {'backbone': dict(lr_mult=0.1)}
    # --full: 4x the images; the detector keeps its epochs, the segmentor's iterations and decay grow 4x
    if task == 'cascade-mask-rcnn':
        assert full.train_cfg.max_epochs == length and full.param_scheduler == cfg.param_scheduler
    else:
        assert full.train_cfg.max_iters == 4 * length == full.param_scheduler[0]['end']


def test_vit_runs_are_named_apart_and_the_first_studies_names_stay():
    assert study.run_name('semantic-fpn', 'petah2', 'tf-efficientnet-lite0') == 'semantic-fpn_petah2'
    assert study.run_name('semantic-fpn', 'petah2', 'dinov2-vit-s14') == 'semantic-fpn_dinov2-vit-s14_petah2'
    assert 'attn-ft' in study.METHODS['dinov2-vit-s14'] and 'attn-ft' not in study.METHODS['tf-efficientnet-lite0']
    for task, backbone in [(t, b) for t in study.TASKS for b in study.METHODS]:
        for method in study.METHODS[backbone]:
            assert study.config_path(task, method, backbone).is_file(), (task, backbone, method)


def test_vit_pyramid_uses_its_own_strides():
    """The simple pyramid's levels are at strides 3.5 ... 28 (14-px patches rescaled by 4, 2, 1, 1/2): the anchors
    and RoI extractors must use them, and the images must pad to whole patches of the coarsest level."""
    cfg = study.Config.fromfile(str(study.config_path('cascade-mask-rcnn', 'petah2', 'dinov2-vit-s14')))
    assert cfg.model.neck[0].scales == [4, 2, 1, 0.5]
    assert cfg.model.rpn_head.anchor_generator.strides == [3.5, 7, 14, 28, 56]
    assert cfg.model.roi_head.bbox_roi_extractor.featmap_strides == [3.5, 7, 14, 28]
    assert cfg.model.roi_head.mask_roi_extractor.featmap_strides == [3.5, 7, 14, 28]
    assert cfg.model.data_preprocessor.pad_size_divisor == 28


def test_markdown_table_has_one_row_per_run():
    runs = [dict(task='cascade-mask-rcnn', method='petah2', metrics={'coco/bbox_mAP': 0.25, 'coco/segm_mAP': 0.5},
                 backbone_params=60982, trainable_params=3391184, train_min=1.25),
            dict(task='semantic-fpn', backbone='dinov2-vit-s14', method='frozen', metrics={'mIoU': 41.234},
                 backbone_params=0, trainable_params=439371, train_min=0.5)]
    table = study.markdown(runs)
    assert ('| cascade-mask-rcnn | tf-efficientnet-lite0 | petah2 | 0.250 | 0.500 | – | 60,982 | 3,391,184 | 1.2 |'
            in table)
    assert '| semantic-fpn | dinov2-vit-s14 | frozen | – | – | 41.2 | 0 | 439,371 | 0.5 |' in table


@pytest.mark.slow
def test_quick_study_through_the_runner(tmp_path):
    results = study.main(['--quick', '--work-dir', str(tmp_path)])
    runs = {(run['task'], run['backbone']): run for run in results['runs']}
    assert set(runs) == {(t, b) for t in study.TASKS for b in study.METHODS}
    assert {run['method'] for run in runs.values()} == {'petah2'}
    for backbone in study.METHODS:
        det, seg = runs['cascade-mask-rcnn', backbone], runs['semantic-fpn', backbone]
        assert 0 < det['backbone_params'] == seg['backbone_params'] < 250_000
        assert 0 <= det['metrics']['coco/bbox_mAP'] <= 1 and 0 <= seg['metrics']['mIoU'] <= 100
    # PETAH-2 of the ViT: rank-8 LoRA on 24 attention linears and rank-2 conv LoRA on the patch embedding
    assert runs['semantic-fpn', 'dinov2-vit-s14']['backbone_params'] == 223_128
    assert all(Path(run['checkpoint']).is_file() for run in runs.values())  # kept for the release
    saved = json.loads((tmp_path / 'dense_study.json').read_text())
    assert saved['runs'] == results['runs']
    table = (tmp_path / 'dense_study.md').read_text()
    assert '| semantic-fpn | dinov2-vit-s14 | petah2 |' in table
    # the CPU its training times ran on
    assert saved['machine']['cpu'] == machine.describe()['cpu'] and f'CPU: {saved["machine"]["cpu"]}' in table


def test_out_name_outside_the_work_dir_is_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="--out-name '../dense'"):
        study.main(['--quick', '--work-dir', str(tmp_path), '--out-name', '../dense'])
    assert list(tmp_path.iterdir()) == []


def test_a_detector_that_predicts_nothing_scores_zero_and_says_so():
    assert study.task_metrics({}, 'cascade-mask-rcnn') == {'coco/bbox_mAP': 0.0, 'coco/segm_mAP': 0.0,
                                                           'no_predictions': True}
    assert study.task_metrics({'coco/bbox_mAP': 0.25, 'coco/segm_mAP': 0.5, 'x': 1}, 'cascade-mask-rcnn') == {
        'coco/bbox_mAP': 0.25, 'coco/segm_mAP': 0.5}
    with pytest.raises(KeyError, match='mIoU'):  # a segmentor always scores: a missing mIoU is a bug, not a zero
        study.task_metrics({}, 'semantic-fpn')
