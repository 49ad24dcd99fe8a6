"""write_toy_user_config: what mmengine loads from the written config, and the configs it refuses."""
import pytest
from mmengine.config import Config

from petah_mm.datasets import TOY_CONFIGS, write_toy_user_config
from helpers import TOY


def load(tmp_path, name, batch_size=None, **overrides):
    path = write_toy_user_config(tmp_path / f'{name}.user.py', TOY / name, tmp_path / 'data', tmp_path / 'bb.pth',
                                 batch_size=batch_size, **overrides)
    return Config.fromfile(path)


def test_every_toy_config_in_the_repository_is_known():
    assert sorted(TOY_CONFIGS) == sorted(p.name for p in TOY.glob('*.py'))


@pytest.mark.parametrize('name', ['cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py', 'fpn_ef-l1-petah2_toy-ade20k.py',
                                  'ef-l1-petah2_toy-cls.py'])
def test_data_roots_backbone_and_overrides_land_in_the_loaded_config(tmp_path, name):
    base_cfg = Config.fromfile(TOY / name)
    cfg = load(tmp_path, name, batch_size=3, default_hooks=dict(logger=dict(interval=1)))
    coco = TOY_CONFIGS[name] == 'coco'
    root = f'{tmp_path}/data/' if coco else f'{tmp_path}/data'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == root, loader
        assert cfg[loader].dataset.pipeline == base_cfg[loader].dataset.pipeline, f'{loader} lost its pipeline'
    assert cfg.train_dataloader.batch_size == 3 and cfg.val_dataloader.batch_size == base_cfg.val_dataloader.batch_size
    assert cfg.model.backbone.init_cfg.checkpoint == str(tmp_path / 'bb.pth')
    assert cfg.model.backbone.init_cfg.type == base_cfg.model.backbone.init_cfg.type
    assert cfg.default_hooks.logger.interval == 1 and cfg.default_hooks.checkpoint == base_cfg.default_hooks.checkpoint
    if coco:
        for evaluator in ('val_evaluator', 'test_evaluator'):
            assert cfg[evaluator].ann_file == f'{tmp_path}/data/annotations/instances_val2017.json', evaluator
            assert cfg[evaluator].metric == base_cfg[evaluator].metric
    assert load(tmp_path, name).train_dataloader.batch_size == base_cfg.train_dataloader.batch_size


def test_an_unknown_base_or_a_clashing_override_is_refused(tmp_path):
    other = TOY.parent / 'fgvc' / 'ef-l1-petah2_8xb128-200e_dtd.py'
    with pytest.raises(ValueError, match='ef-l1-petah2_8xb128-200e_dtd.py is not a toy config') as error:
        write_toy_user_config(tmp_path / 'user.py', other, tmp_path / 'data', tmp_path / 'bb.pth')
    assert all(name in str(error.value) for name in TOY_CONFIGS)
    with pytest.raises(ValueError, match=r"overrides \['train_dataloader'\]"):
        load(tmp_path, 'ef-l1-petah2_toy-cls.py', train_dataloader=dict(batch_size=1))
    assert not (tmp_path / 'user.py').exists()
