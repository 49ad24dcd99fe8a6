"""Issue 31: a task package's config.json is data read against a schema, not a program.

Each failure of the third adversarial round is here with the attacker's config.json, refused by
``read_package_config`` naming the file, the key path and the rule, before anything is built; payloads write a
marker file, which must not appear. Failures 6, 9 and 11 (the unpickler, staging directories, checkpoint errors)
are tested with the loader; failure 7 (non-finite outputs) needs models and lives in
``test_transactional_switch.py``. Reading a config needs no model, so these tests build none.
"""
import copy
import glob
import json
import sys
import uuid

import pytest
from mmengine.config import Config
from mmengine.registry import MODELS

from petah_mm.adapters import AdapterFileError
from petah_mm.deploy.package_schema import (MAX_AREA, MAX_SIDE, SLOTS, Int, SchemaError, check_package_config,
                                            register_package_type)
from petah_mm.deploy.packages import MAX_CONFIG_BYTES, from_json_object, package_config, read_package_config
from petah_mm.deploy.pipeline import check_image_size, resized_size
from petah_mm.tools.deployment.release_task import MAX_SUMS_BYTES, verify
from helpers import CLS_TOY, DET_TOY, REPO, SEG_TOY

REAL = REPO / 'configs' / 'real'
#: configs that cannot be a task package: a plain ImageNet classifier, no adapted backbone
NOT_TASKS = {'tf-efficientnet-lite0_in1k.py'}


@pytest.fixture(scope='module')
def configs() -> dict:
    """Each task type's package config, as petah_mm exports it (toy EfficientFormer, real timm backbones)."""
    return dict(cls=package_config(Config.fromfile(CLS_TOY)), seg=package_config(Config.fromfile(SEG_TOY)),
                det=package_config(Config.fromfile(DET_TOY)),
                timm_cls=package_config(Config.fromfile(REAL / 'tf-efficientnet-lite0-petah2_animal-cls-64px.py')))


def as_read(config: dict) -> dict:
    """``config`` as the reader hands it to the schema (``{"__tuple__": [...]}`` back to tuples)."""
    return json.loads(json.dumps(config), object_hook=from_json_object)


def write_package(directory, config, task_id='0' * 32):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'config.json').write_text(json.dumps(dict(task_id=task_id, config=config)))
    return directory


def refused(tmp_path, config, key, *rule):
    """Read ``config`` as a package; it must be refused naming the file, ``key`` and each part of ``rule``."""
    package = write_package(tmp_path / f'package_{uuid.uuid4().hex[:6]}', config)
    with pytest.raises(AdapterFileError) as error:
        read_package_config(package)
    message = str(error.value)
    assert message.startswith(f'{package / "config.json"}: {key}'), message
    assert all(part in message for part in rule), message
    return message


@pytest.fixture
def marker(tmp_path):
    """A file the payloads would create."""
    path = tmp_path / f'pwned_{uuid.uuid4().hex[:8]}'
    yield path
    assert not path.exists(), f'the payload ran: {path} exists'


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """``planted(name)``: a module ``name`` on ``sys.path`` that writes a marker when imported."""
    site = tmp_path / 'site'
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    made = []

    def plant(name):
        marker = tmp_path / f'imported_{name}'
        (site / f'{name}.py').write_text(f'open({str(marker)!r}, "w").close()\n')
        made.append((name, marker))
        return marker

    yield plant
    for name, marker in made:
        assert name not in sys.modules and not marker.exists(), f'the planted module {name} was imported'


# ------------------------------------------------------------------------------ the 11 failures


def test_failure_1_an_eval_in_an_assigner_argument_of_a_foreign_head(configs, tmp_path, marker):
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    config = copy.deepcopy(configs['cls'])
    config['model']['head'] = {'_scope_': 'mmdet', 'type': 'RPNHead', 'train_cfg': {'assigner': {
        'type': 'CameraMotionCompensation', 'warp_mode': payload}}}
    refused(tmp_path, config, "config.model.head._scope_='mmdet'", "must be the package's default_scope")
    config['model']['head'] = {'type': 'RPNHead', 'train_cfg': {'assigner': {'type': 'CameraMotionCompensation',
                                                                             'warp_mode': payload}}}
    refused(tmp_path, config, "config.model.head.type='RPNHead'", 'is not a cls_head type', 'allowed there')
    # in a detector, where RPNHead belongs: a package holds no train_cfg, and CameraMotionCompensation is no assigner
    det = copy.deepcopy(configs['det'])
    det['model']['rpn_head']['train_cfg'] = {'assigner': {'type': 'CameraMotionCompensation', 'warp_mode': payload}}
    refused(tmp_path, det, 'config.model.rpn_head.train_cfg=', 'is not an argument RPNHead may take')


def test_failure_2_an_eval_in_a_torchvision_pipeline_step(configs, tmp_path, marker):
    payload = f"float32 if __import__('pathlib').Path({str(marker)!r}).touch() else torch.float32"
    config = copy.deepcopy(configs['cls'])
    config['test_dataloader']['dataset']['pipeline'].insert(2, {'type': 'torchvision/ConvertImageDtype',
                                                                'dtype': payload})
    refused(tmp_path, config, "config.test_dataloader.dataset.pipeline[2].type='torchvision/ConvertImageDtype'",
            'is not a transform type', "'ResizeEdge'")


@pytest.mark.parametrize('where, name', [('neck', 'pseudo_collate'), ('step', 'nearest'), ('neck', 'Resize'),
                                         ('step', 'FPN')])
def test_failure_3_a_name_from_another_registry(configs, tmp_path, planted, where, name):
    """A FUNCTIONS name as a neck, a MODELS name as a step: the registry that builds the node does not know it,
    and mmengine would import a module of that name."""
    planted(name)
    config = copy.deepcopy(configs['cls'])
    if where == 'neck':
        config['model']['neck'] = {'type': name}
        refused(tmp_path, config, f'config.model.neck.type={name!r}', 'is not a cls_neck type')
    else:
        config['test_dataloader']['dataset']['pipeline'][1] = {'type': name}
        refused(tmp_path, config, f'config.test_dataloader.dataset.pipeline[1].type={name!r}',
                'is not a transform type')


@pytest.mark.parametrize('key, name', [('neck', 'nms'), ('loss', 'RoIAlign'), ('neck', 'soft_nms'),
                                       ('loss', 'RoIPool')])
def test_failure_4_a_non_registry_name_outside_its_slot(configs, tmp_path, planted, key, name):
    planted(name)
    config = copy.deepcopy(configs['det'])
    if key == 'neck':
        config['model']['neck'] = {'type': name, 'iou_threshold': 0.5}
        refused(tmp_path, config, f'config.model.neck.type={name!r}', 'is not a fpn_neck type')
    else:
        config['model']['rpn_head']['loss_cls'] = {'type': name, 'output_size': 7}
        refused(tmp_path, config, f'config.model.rpn_head.loss_cls.type={name!r}', 'is not a det_loss type')


def test_failure_4_nms_and_roi_layers_still_load_in_their_slots(configs):
    config = configs['det']
    assert config['model']['test_cfg']['rcnn']['nms']['type'] == 'nms'
    assert config['model']['roi_head']['bbox_roi_extractor']['roi_layer']['type'] == 'RoIAlign'
    check_package_config(as_read(config))


@pytest.mark.parametrize('argument, value, rule', [
    ('checkpoint_path', '/any/file.pth', 'makes timm torch.load the file it names'),
    ('pretrained', True, 'must be false: a pretrained timm model downloads its weights'),
    ('init_cfg', {'type': 'Pretrained', 'checkpoint': '/any/file.pth'}, 'must be null in a task package'),
    ('model_name', 'hf-hub:timm/resnet18.a1_in1k', 'must be the exact name of a timm architecture'),
    ('model_name', 'resnet18.a1_in1k', 'must be the exact name of a timm architecture'),
    ('pretrained_cfg_overlay', {'file': '/any/file.pth'}, 'names a weight source or file'),
])
def test_failure_5_no_path_argument_reaches_timm(configs, tmp_path, argument, value, rule):
    config = copy.deepcopy(configs['timm_cls'])
    inner = config['model']['backbone']['backbone']
    assert inner['type'] == 'mmpretrain.TIMMBackbone'
    inner[argument] = value
    refused(tmp_path, config, f'config.model.backbone.backbone.{argument}=', rule)


def test_failure_8_a_resize_bomb_is_refused_at_load_naming_the_step(configs, tmp_path):
    config = copy.deepcopy(configs['cls'])
    step = config['test_dataloader']['dataset']['pipeline'][1]
    assert step['type'] == 'ResizeEdge'
    step['scale'] = 60000
    refused(tmp_path, config, 'config.test_dataloader.dataset.pipeline[1].scale=60000',
            f'must be an integer in [1, {MAX_SIDE}]')
    for key, value in (('crop_size', 60000), ('auto_pad', 'yes')):
        crop = copy.deepcopy(configs['cls'])
        crop['test_dataloader']['dataset']['pipeline'][2][key] = value
        refused(tmp_path, crop, f'config.test_dataloader.dataset.pipeline[2].{key}=')
    det = copy.deepcopy(configs['det'])
    det['model']['data_preprocessor']['pad_size_divisor'] = 10 ** 6
    refused(tmp_path, det, 'config.model.data_preprocessor.pad_size_divisor=1000000', 'must be an integer in')


@pytest.mark.parametrize('step, size', [
    (dict(type='ResizeEdge', scale=72, edge='short'), (10, 10000)),  # 72 x 72000
    (dict(type='ResizeEdge', scale=4096, edge='short'), (2000, 3000)),  # 4096 x 6144: past the side
    (dict(type='ResizeEdge', scale=4000, edge='long'), (3000, 3000)),  # 4000 x 4000: past the area
])
def test_failure_8_a_resize_that_would_grow_past_the_bounds_is_refused_when_served(step, size):
    new = resized_size(step, size)
    assert max(new) > MAX_SIDE or new[0] * new[1] > MAX_AREA
    with pytest.raises(ValueError, match=r'img.jpg: the test pipeline step ResizeEdge\(scale=.*beyond the 4096 pixels'):
        check_image_size(step, size, 'img.jpg')


def test_failure_10_a_40_mb_config_is_refused_unread(tmp_path):
    package = tmp_path / 'big'
    package.mkdir()
    with open(package / 'config.json', 'wb') as f:
        f.truncate(40 << 20)
    with pytest.raises(AdapterFileError, match=f'config.json: larger than {MAX_CONFIG_BYTES} bytes, the limit for '
                       'a package config'):
        read_package_config(package)


def test_failure_10_a_long_type_string_is_quoted_in_a_few_hundred_characters(configs, tmp_path):
    """The 5 MB type string is refused by the size limit; one just under it is quoted, not echoed whole."""
    config = copy.deepcopy(configs['cls'])
    config['model']['neck']['type'] = 'A' * (5 << 20)
    refused(tmp_path, config, 'larger than 1048576 bytes')
    config['model']['neck']['type'] = 'A' * 1_000_000
    message = refused(tmp_path, config, "config.model.neck.type='AAAA", '(1000002 characters)',
                      'is not a cls_neck type')
    assert len(message) < 1200, len(message)
    key = copy.deepcopy(configs['cls'])
    key['model']['neck']['B' * 1_000_000] = 1
    assert len(refused(tmp_path, key, 'config.model.neck.', 'is not an argument')) < 1200


def test_failure_10_a_released_checksum_list_is_bounded(tmp_path):
    package = tmp_path / 'pkg-00000000'
    package.mkdir()
    (package / 'SHA256SUMS').write_text('0' * (MAX_SUMS_BYTES + 1))
    with pytest.raises(AdapterFileError, match='SHA256SUMS: larger than 4096 bytes'):
        verify(package)


# ------------------------------------------------------------------------------ other sinks of allowed types


@pytest.mark.parametrize('task, key, value, rule', [
    # mmseg's losses read a str class_weight with np.load / mmengine.load (a pickle)
    ('seg', 'model.decode_head.loss_decode.class_weight', '/tmp/weights.pkl', 'must be null or a list'),
    # mmcv's batched_nms evals its type
    ('det', 'model.test_cfg.rcnn.nms.type', "__import__('os').getcwd()", 'is not a nms type'),
    # mmdet reads a RoI layer by getattr(mmcv.ops, type)
    ('det', 'model.roi_head.bbox_roi_extractor.roi_layer.type', 'nms', 'is not a roi_layer type'),
    # a str pretrained becomes a Pretrained init_cfg in mmdet's and mmseg's backbones
    ('seg', 'model.pretrained', 'open-mmlab://resnet50_v1c', 'must be null in a task package'),
    # loading steps open files through a storage backend of the package's choice
    ('det', 'test_dataloader.dataset.pipeline[0].backend_args', {'backend': 'petrel'}, 'names a storage backend'),
    ('cls', 'model.backbone.targets', {'attn': ['(a+)+$']}, 'must be null'),  # regexes the backbone compiles
    ('cls', 'model.backbone.arch', {'layers': [1], 'embed_dims': [8]}, "must be one of ['l1', 'l3', 'l7']"),
    ('cls', 'model.head.in_channels', 10 ** 9, 'must be an integer in [1, 8192]'),  # a 4 TB linear layer
])
def test_other_sinks_in_arguments_of_allowed_types(configs, tmp_path, task, key, value, rule):
    config = copy.deepcopy(configs[task])
    *parents, last = key.replace('[0]', '.0').split('.')
    node = config
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    refused(tmp_path, config, f'config.{key}=', rule)


def test_a_petah_budget_adapter_with_its_ranks_reads_back(configs, tmp_path):
    config = copy.deepcopy(configs['cls'])
    config['model']['backbone']['adapter'] = {'method': 'petah', 'budget': 'petah2',
                                              'layer_ranks': {'network.0.0.mixer.qkv': 9, 'stem.0': 1}}
    _, cfg = read_package_config(write_package(tmp_path / 'package', config))
    assert cfg.model.backbone.adapter.layer_ranks == {'network.0.0.mixer.qkv': 9, 'stem.0': 1}


@pytest.mark.parametrize('adapter, key, rule', [
    ({'layer_ranks': {"__import__('os')": 2}}, 'layer_ranks.__import__(\'os\')', 'is not a layer name'),
    ({'layer_ranks': {'stem.0': 10 ** 6}}, 'layer_ranks.stem.0', 'must be an integer in [1, 1024]'),
    ({'budget': 'weights.npy'}, 'budget', "must be null or one of ['frozen'"),
])
def test_petah_budget_ranks_are_layer_names_and_bounded_ranks(configs, tmp_path, adapter, key, rule):
    config = copy.deepcopy(configs['cls'])
    config['model']['backbone']['adapter'] = dict(method='petah', **adapter)
    refused(tmp_path, config, f'config.model.backbone.adapter.{key}=', rule)


def test_anything_beyond_what_serving_needs_is_refused(configs, tmp_path):
    for key, value in (('custom_imports', {'imports': ['petah_mm']}), ('visualizer', {'type': 'DetLocalVisualizer'}),
                       ('train_dataloader', {}), ('load_from', None)):
        refused(tmp_path, dict(copy.deepcopy(configs['det']), **{key: value}), f'config.{key}=',
                'is not a key this schema allows here')
    refused(tmp_path, dict(copy.deepcopy(configs['det']), model=dict(configs['det']['model'], train_cfg={})),
            'config.model.train_cfg=', 'is not an argument CascadeRCNN may take')


# ------------------------------------------------------------------------------ what petah_mm writes always loads


def exportable_configs():
    return sorted(p for p in glob.glob(str(REPO / 'configs' / '**' / '*.py'), recursive=True)
                  if '_base_' not in p and p.rsplit('/', 1)[-1] not in NOT_TASKS)


@pytest.mark.parametrize('path', [CLS_TOY, SEG_TOY, DET_TOY, *sorted(p for p in REAL.glob('*.py')
                                                                     if p.name not in NOT_TASKS)],
                         ids=lambda p: p.name)
def test_the_project_s_toy_and_real_configs_export_and_read_back(path, tmp_path):
    config = package_config(Config.fromfile(path))
    _, cfg = read_package_config(write_package(tmp_path / 'package', config))
    assert cfg.model.type in ('ImageClassifier', 'EncoderDecoder', 'CascadeRCNN')


@pytest.mark.slow
def test_every_config_of_the_project_exports_and_reads_back(tmp_path):
    """All of configs/ (EfficientFormer L1/L3/L7 and sparse, fastvit, Swin, the real timm backbones)."""
    failed = {}
    for path in exportable_configs():
        try:
            check_package_config(as_read(package_config(Config.fromfile(path))))
        except (SchemaError, ValueError) as e:
            failed[path] = str(e)[:300]
    assert not failed and len(exportable_configs()) > 300, failed


@pytest.mark.parametrize('package', sorted(p for p in (REPO / 'release').glob('*-*') if p.is_dir()),
                         ids=lambda p: p.name)
def test_the_released_packages_read_back(package):
    _, cfg = read_package_config(package)
    assert set(cfg) == {'default_scope', 'model', 'test_dataloader'}


def test_the_exporter_refuses_what_the_reader_would(tmp_path):
    cfg = Config.fromfile(CLS_TOY)
    cfg.model.backbone.init_cfg = None
    cfg.model.head.loss = dict(type='CrossEntropyLoss', class_weight='weights.npy')
    with pytest.raises(ValueError, match=r'cannot be exported as a task package: config.model.head.loss.class_weight='
                       "'weights.npy' must be null or a list"):
        package_config(cfg)


# ------------------------------------------------------------------------------ the local opt-in


def test_a_head_of_the_user_s_own_is_allowed_only_by_the_caller(configs, tmp_path, monkeypatch):
    from mmpretrain.models.heads import LinearClsHead
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    name = f'MyClsHead{uuid.uuid4().hex[:6]}'
    MMPRETRAIN_MODELS.register_module(name=name, module=type(name, (LinearClsHead, ), {}))
    monkeypatch.setitem(SLOTS, 'cls_head', dict(SLOTS['cls_head']))  # the registration below ends with the test
    config = copy.deepcopy(configs['cls'])
    config['model']['head'] = dict(type=name, in_channels=448, num_classes=4)
    refused(tmp_path, config, f'config.model.head.type={name!r}', 'register_package_type')
    register_package_type('cls_head', name, dict(in_channels=Int(1, 8192), num_classes=Int(1, 1000)),
                          scopes=('mmpretrain', ))
    _, cfg = read_package_config(write_package(tmp_path / 'mine', config))
    assert cfg.model.head.type == name
    config['model']['head']['init_cfg'] = {'type': 'Pretrained', 'checkpoint': 'x.pth'}  # only the listed arguments
    refused(tmp_path, config, 'config.model.head.init_cfg=', f'is not an argument {name} may take')
    assert MODELS.get(name) is None  # a name of mmpretrain's registry only


def test_registering_refuses_an_unknown_slot_or_argument_spec():
    with pytest.raises(KeyError, match="unknown package-config slot 'heads'"):
        register_package_type('heads', 'X', {})
    with pytest.raises(TypeError, match=r"arguments \['k'\] of X need a Spec"):
        register_package_type('cls_head', 'X', dict(k=int))
