"""The config a work dir saves holds real settings only: no petah_mm helper variable, no other arch's weights."""
import pytest
from mmengine.config import Config

from helpers import REPO

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
LIBRARY_BASES = [  # what the libraries' own configs define at the top level is theirs, not ours
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
    'mmpretrain::_base_/datasets/cub_bs8_448.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
#: mmengine Runner (``Runner.from_cfg``) settings and petah_mm's import, which the library bases leave unset
RUNNER_KEYS = {'custom_imports', 'randomness', 'auto_scale_lr', 'custom_hooks', 'model_wrapper_cfg',
               'data_preprocessor', 'load_from', 'resume', 'work_dir', 'launcher'}


@pytest.fixture(scope='module')
def allowed_keys(tmp_path_factory):
    keys = set(RUNNER_KEYS)
    for base in LIBRARY_BASES:
        path = tmp_path_factory.mktemp('base') / 'library_base.py'
        path.write_text(f"_base_ = '{base}'\n")
        keys |= set(Config.fromfile(str(path)).keys())
    return keys


def test_there_are_configs_to_check():
    assert len(CONFIGS) > 250 and any(p.parent.name == 'toy' for p in CONFIGS)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_dumped_config_holds_only_real_settings(path, allowed_keys):
    cfg = Config.fromfile(str(path))
    helpers = sorted(set(cfg.keys()) - allowed_keys)
    assert not helpers, f'{path.name} dumps helper variables {helpers}: take them out with _base_.pop(name) ' \
        'or give them a __ name'
    text = str(cfg.to_dict())
    arch = cfg.model.backbone.get('arch')
    others = [a for a in ('l1', 'l3', 'l7') if a != arch and f'efficientformer-{a}_' in text]
    assert not others, f'{path.name} (arch {arch}) mentions the weights of {others}'


def test_dump_of_an_l1_config_reads_back_to_the_same_model(tmp_path):
    cfg = Config.fromfile(str(REPO / 'configs/cascade_rcnn/cascade-mask-rcnn_ef-l1-petah2_fpn_1x_coco.py'))
    cfg.dump(tmp_path / 'dumped.py')
    text = (tmp_path / 'dumped.py').read_text()
    assert 'efficientformer-l7' not in text and 'petah_backbone' not in text and 'ef_checkpoints' not in text
    dumped = Config.fromfile(str(tmp_path / 'dumped.py'))
    assert dumped.model == cfg.model and dumped.model.backbone.arch == 'l1'
    assert dumped.model.neck.in_channels == [48, 96, 224, 448]
