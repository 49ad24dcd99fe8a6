"""The main job's choice of data and backbone: the real PETAH-2 EfficientNet-Lite0 run by default, the
EfficientFormer-L1 toy run one --config away, and a clear refusal of a config whose dataset it cannot generate."""
import pytest

import petah_mm.tools.studies.main_job as main_job
from petah_mm.datasets import make_animal_silhouettes, make_toy_coco

TOY = main_job.TOY_CONFIG


def test_the_default_is_petah2_on_the_real_pretrained_backbone_and_real_silhouettes(tmp_path):
    args = ['--work-dir', str(tmp_path), '--seed', '3']
    cfg, generator = main_job.load_config(main_job.parse_args(args))
    assert generator is make_animal_silhouettes
    backbone = cfg.model.backbone
    assert backbone.adapter.method == 'petah' and backbone.adapter.conv_rank == 2
    assert backbone.backbone.model_name == 'tf_efficientnet_lite0'
    assert backbone.backbone.init_cfg.checkpoint == 'pypkg://efficientnet-lite0/features'
    assert cfg.randomness == dict(seed=3, deterministic=True) and cfg.work_dir == str(tmp_path)
    assert cfg.test_evaluator.ann_file == 'data/animal_silhouettes/annotations/instances_val2017.json'


def test_the_toy_run_is_one_config_away(tmp_path):
    assert TOY == 'configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py'
    args = main_job.parse_args(['--config', TOY, '--data-root', str(tmp_path / 'coco')])
    cfg, generator = main_job.load_config(args)
    assert generator is make_toy_coco and cfg.model.backbone.arch == 'l1'
    assert {cfg[f'{s}_dataloader'].dataset.data_root for s in ('train', 'val', 'test')} == {f'{tmp_path}/coco/'}


def test_a_config_on_data_it_cannot_generate_is_refused(tmp_path):
    args = main_job.parse_args(['--config', TOY, '--cfg-options', 'train_dataloader.dataset.data_root=data/coco/'])
    with pytest.raises(ValueError, match=r"'data/coco/'.*animal_silhouettes"):
        main_job.load_config(args)
