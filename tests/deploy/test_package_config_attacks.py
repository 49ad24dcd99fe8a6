"""A task package's config.json as an attacker writes it: every key that makes mmengine import or resolve a
name, at several depths, and numbers built to break the reader. Each is refused by ``read_package_config``,
naming the file and the key, before mmengine sees the config, and the planted payload module is never
imported. Reading needs no model, so these tests build none (issue 31's schema attacks:
``test_package_schema.py``)."""
import copy
import json
import re
import sys
import threading
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from petah_mm.adapters import AdapterFileError
from petah_mm.deploy.package_schema import LIBRARY_SCOPES, check_package_config, is_registered_in
from petah_mm.deploy.packages import package_config, read_package_config, to_json_data
from helpers import CLS_TOY


@pytest.fixture(scope='module')
def cls_config() -> dict:
    """The toy classifier's config as a package stores it."""
    return package_config(Config.fromfile(CLS_TOY))


@pytest.fixture
def plant(tmp_path, monkeypatch):
    """``plant()``: a new package ``payload_<hex>`` on ``sys.path`` whose ``__init__`` and ``registry`` modules
    write a marker file when imported; returns its name and the marker."""
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))

    def make():
        name, marker = f'payload_{uuid.uuid4().hex[:8]}', tmp_path / f'imported_{uuid.uuid4().hex[:8]}'
        (tmp_path / 'site' / name).mkdir(parents=True)
        for module in ('__init__', 'registry'):
            (tmp_path / 'site' / name / f'{module}.py').write_text(
                f'with open({str(marker)!r}, "a") as f:\n    f.write("{module}\\n")\nclass Payload:\n    pass\n')
        return name, marker

    return make


def assert_not_imported(name, marker):
    imported = sorted(m for m in sys.modules if m == name or m.startswith(f'{name}.'))
    assert not imported and not marker.exists(), f'payload imported: modules {imported}, marker {marker.exists()}'


def write_package(directory, config, task_id='0' * 32):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'config.json').write_text(json.dumps(dict(task_id=task_id, config=config)))
    return directory


def test_the_planted_payload_runs_when_mmengine_resolves_it(plant):
    """The control: mmengine itself imports ``<scope>.registry`` and the dotted path, so the payload would run."""
    name, marker = plant()
    assert MODELS.get(f'{name}.Payload').__module__ == name
    assert set(marker.read_text().split()) == {'__init__', 'registry'}


#: key -> (what is planted, the key path's last part)
ATTACKS = {
    '_scope_': lambda p: ('_scope_', p),
    'dotted type': lambda p: ('type', f'{p}.Payload'),
    ':: type': lambda p: ('type', f'{p}::Payload'),
    'second scope prefix': lambda p: ('type', f'mmdet.{p}.Payload'),
    'default_scope': lambda p: ('default_scope', p),
    'custom_imports': lambda p: ('custom_imports', dict(imports=[p], allow_failed_imports=False)),
    '_base_': lambda p: ('_base_', f'{p}::base.py'),
    'scope prefix in a string': lambda p: ('data_root', f'{p}::data'),
}


def top_level(config):
    return config, 'config'


def neck(config):
    return config['model']['neck'], 'config.model.neck'


def pipeline_step(config):
    return config['test_dataloader']['dataset']['pipeline'][1], 'config.test_dataloader.dataset.pipeline[1]'


@pytest.mark.parametrize('where', [top_level, neck, pipeline_step], ids=lambda f: f.__name__)
@pytest.mark.parametrize('attack', ATTACKS)
def test_no_config_key_imports_anything(cls_config, plant, tmp_path, attack, where):
    name, marker = plant()
    config = copy.deepcopy(cls_config)
    node, path = where(config)
    key, value = ATTACKS[attack](name)
    node[key] = value
    package = write_package(tmp_path / 'package', config)
    with pytest.raises(AdapterFileError) as refused:
        read_package_config(package)
    message = str(refused.value)
    assert message.startswith(f'{package / "config.json"}: {path}.{key}='), message
    assert 'package schema' in message, message
    assert_not_imported(name, marker)


def test_a_step_holding_other_steps_is_refused(cls_config, tmp_path):
    """TestTimeAug (its transforms a list of lists) is not a step a package serves with."""
    config = copy.deepcopy(cls_config)
    pipeline = config['test_dataloader']['dataset']['pipeline']
    pipeline[1] = dict(type='TestTimeAug', transforms=[[pipeline[1]]])
    with pytest.raises(AdapterFileError, match=r"config.test_dataloader.dataset.pipeline\[1\].type='TestTimeAug' is "
                       'not a transform type'):
        read_package_config(write_package(tmp_path / 'tta', config))


def test_the_package_scope_loads_and_another_is_refused(cls_config, tmp_path):
    config = copy.deepcopy(cls_config)
    config['model']['neck']['_scope_'] = 'mmpretrain'
    task_id, cfg = read_package_config(write_package(tmp_path / 'ok', config))
    assert cfg.model.neck._scope_ == 'mmpretrain' and task_id == '0' * 32
    config['model']['neck']['_scope_'] = 'mmseg'  # a library, but not the package's
    with pytest.raises(AdapterFileError, match=r"config.model.neck._scope_='mmseg' must be the package's "
                       r"default_scope 'mmpretrain'"):
        read_package_config(write_package(tmp_path / 'other_scope', config))


def test_is_registered_imports_only_library_registries(plant):
    name, marker = plant()
    with pytest.raises(ValueError, match=f"scope '{name}' is not one of"):
        is_registered_in('MODELS', 'ResNet', name)
    assert not is_registered_in('MODELS', f'{name}.Payload', 'mmdet')
    assert not is_registered_in('MODELS', 'Payload', 'mmdet')
    assert is_registered_in('MODELS', 'ResNet', 'mmdet') and is_registered_in('MODELS', 'mmpretrain.ResNet', 'mmdet')
    # each registry holds its own names: a transform is not a model, a model is not a transform
    assert is_registered_in('TRANSFORMS', 'Resize', 'mmdet') and not is_registered_in('MODELS', 'Resize', 'mmdet')
    assert not is_registered_in('TRANSFORMS', 'FPN', 'mmdet')
    assert_not_imported(name, marker)
    assert set(LIBRARY_SCOPES) == {'mmengine', 'mmdet', 'mmseg', 'mmpretrain'}


def test_checking_changes_no_mmengine_state_seen_by_other_threads(cls_config):
    """Checks once switched mmengine's import fallback off process-wide; a build in another thread that needs
    the fallback (a dotted name no registry holds) must keep working while packages are checked."""
    found, stop = [], threading.Event()

    def build_elsewhere():
        while not stop.is_set():
            found.append(MODELS.get('torch.nn.Identity'))

    thread = threading.Thread(target=build_elsewhere)
    thread.start()
    try:
        for _ in range(20):
            check_package_config(cls_config)
    finally:
        stop.set()
        thread.join()
    assert found and all(cls is torch.nn.Identity for cls in found), \
        f'{sum(cls is not torch.nn.Identity for cls in found)} of {len(found)} lookups failed during the checks'


def test_reserved_config_keys_are_refused_clearly(cls_config, tmp_path):
    config = dict(copy.deepcopy(cls_config), filename='x.py')
    with pytest.raises(AdapterFileError, match=r"config.filename='x.py' is not a key this schema allows here"):
        read_package_config(write_package(tmp_path / 'reserved', config))


# ------------------------------------------------------------------------------ numbers and nesting


@pytest.mark.parametrize('literal, shown', [('1e999', 'inf'), ('-1e999', '-inf'), ('NaN', 'nan'),
                                            ('Infinity', 'inf')])
@pytest.mark.parametrize('key', ['model.head.loss.loss_weight', 'test_dataloader.dataset.pipeline[2].crop_size',
                                 'model.backbone.adapter.rank'])
def test_non_finite_numbers_are_refused_with_their_key(cls_config, tmp_path, literal, shown, key):
    config = copy.deepcopy(cls_config)
    marker = '"__number__"'
    if key.endswith('loss_weight'):
        config['model']['head']['loss']['loss_weight'] = '__number__'
    elif key.endswith('crop_size'):
        config['test_dataloader']['dataset']['pipeline'][2]['crop_size'] = '__number__'
    else:
        config['model']['backbone']['adapter']['rank'] = '__number__'
    package = tmp_path / 'package'
    package.mkdir()
    (package / 'config.json').write_text(json.dumps(dict(task_id='0' * 32, config=config)).replace(marker, literal))
    with pytest.raises(AdapterFileError, match=re.escape(f'config.json: config.{key}={shown} is not a finite number')):
        read_package_config(package)


def test_a_5000_digit_integer_is_refused_naming_file_and_key(cls_config, tmp_path):
    package = tmp_path / 'package'
    write_package(package, copy.deepcopy(cls_config))
    text = (package / 'config.json').read_text().replace('"dim": 1', '"dim": ' + '9' * 5000)
    (package / 'config.json').write_text(text)
    with pytest.raises(AdapterFileError, match=r'config.json: config.model.neck.dim is an integer of 5000 digits'):
        read_package_config(package)


@pytest.mark.parametrize('depth', [500, 200_000])
def test_deep_nesting_is_refused_not_a_recursion_error(cls_config, tmp_path, depth):
    package = tmp_path / 'package'
    write_package(package, copy.deepcopy(cls_config))
    text = (package / 'config.json').read_text()
    (package / 'config.json').write_text(text.replace('"dim": 1', '"dim": ' + '[' * depth + ']' * depth))
    with pytest.raises(AdapterFileError, match='config.json: JSON nested more than 64 levels deep'):
        read_package_config(package)


def test_export_refuses_a_number_the_reader_would_refuse():
    with pytest.raises(ValueError, match=r'config.model.head.loss.loss_weight=inf cannot be stored in a task '
                       'package'):
        to_json_data(dict(model=dict(head=dict(loss=dict(loss_weight=float('inf'))))))
