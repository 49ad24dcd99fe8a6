"""The released task packages (release/): each is named by the sha256 of its files and refuses a changed file,
holds adapters and heads only (the backbone is the installed pretrained weights, checked by fingerprint when it
loads), and reproduces the metrics its results.json (and the README) state on the split it was measured on, which
the test regenerates from the generator arguments results.json records. Every package folder under release/ is
checked, whatever its task (detection, segmentation, classification; CNN or ViT). The release path itself is run
on a classification task of the real DINOv2 ViT-S/14 with seeded random adapters."""
import json
import shutil

import pytest
import torch
from mmengine.config import Config
from safetensors import safe_open

from petah_mm.datasets import ANIMAL_CLASSES, make_animal_classification
from petah_mm.deploy import load_task_package
from petah_mm.deploy.packages import build_task_model
from petah_mm.testing import randomise_adapters
from petah_mm.tools.deployment.release_data import evaluated_split, regenerate
from petah_mm.tools.deployment.release_task import (RESULTS, SUMS, ZOO_METRICS, evaluate, installed_backbone, release,
                                                    verify)
from helpers import REPO

PACKAGES = sorted(p for p in (REPO / 'release').glob('*-*') if p.is_dir())
REAL = REPO / 'configs' / 'real'
VIT_CLS = REAL / 'dinov2-vit-s14-petah2_animal-cls-112px.py'


def test_there_are_released_packages():
    names = {p.name.rsplit('-', 1)[0] for p in PACKAGES}
    assert names >= {'cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes',
                     'fpn_tf-efficientnet-lite0-petah2_animal-silhouettes'}, names
    assert all((REAL / f'{name}.py').is_file() for name in names), 'a package named after no configs/real config'


@pytest.mark.parametrize('package', PACKAGES, ids=lambda p: p.name)
def test_package_verifies_and_refuses_a_changed_file(package, tmp_path):
    verify(package)
    changed = tmp_path / package.name
    shutil.copytree(package, changed)
    config = changed / 'config.json'
    config.write_text(config.read_text().replace('"petah"', '"full"', 1))
    assert config.read_text() != (package / 'config.json').read_text()
    with pytest.raises(ValueError, match=SUMS):
        verify(changed)
    renamed = tmp_path / (package.name[:-8] + '0' * 8)
    shutil.copytree(package, renamed)
    with pytest.raises(ValueError, match='sha256 prefix'):
        verify(renamed)


def reproduce(package, tmp_path) -> dict:
    """Load ``package`` on its config's installed weights, regenerate the split its results.json states it was
    measured on, and check the stated metrics on it; returns the stated results."""
    stated = json.loads((package / RESULTS).read_text())
    backbone = installed_backbone(REPO / stated['config'])
    assert backbone.frozen_fingerprint() == stated['backbone_fingerprint']
    model = load_task_package(package, backbone.shared_state_dict())  # checks the adapter's backbone fingerprint
    assert not any(name.startswith('backbone.') for name in json.loads((package / 'config.json').read_text()))
    with safe_open(str(package / 'task.safetensors'), 'pt') as task:  # the heads, not a backbone
        assert {name.split('.')[0] for name in task.keys()} <= {'neck', 'rpn_head', 'roi_head', 'decode_head', 'head'}
    del model
    metrics = stated['metrics']
    assert set(metrics) - {'num_images'} <= set(ZOO_METRICS) and len(metrics) > 1, metrics
    data = regenerate(stated['data'], tmp_path / 'data')
    measured = evaluate(package, REPO / stated['config'], backbone.shared_state_dict(), data, tmp_path / 'eval')
    for name, value in metrics.items():
        assert measured[name] == pytest.approx(value, abs=1e-3), f'{name}: measured {measured[name]}, stated {value}'
    return stated


@pytest.mark.slow
@pytest.mark.parametrize('package', PACKAGES, ids=lambda p: p.name)
def test_package_reproduces_its_stated_metrics(package, tmp_path):
    reproduce(package, tmp_path)


@pytest.mark.parametrize('config, split', [
    (VIT_CLS, 'test'),  # the classification set's test split: the study reports it, no choice looked at it
    (REAL / 'fpn_dinov2-vit-s14-petah2_simple-fpn_animal-silhouettes.py', 'val'),
    (REAL / 'cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py', 'val')])
def test_the_split_a_release_is_measured_on(config, split):
    counts = dict(num_train_per_class=1, num_val_per_class=1, num_test_per_class=1) if 'cls' in config.name else \
        dict(num_train=1, num_val=1)
    assert evaluated_split(counts, Config.fromfile(config).test_dataloader.dataset) == split


def test_regenerating_keeps_the_measured_split_and_cuts_the_others(monkeypatch, tmp_path):
    from petah_mm.tools.deployment import release_data
    calls = []
    monkeypatch.setitem(release_data.GENERATORS, 'animal_classification',
                        lambda root, **kwargs: calls.append(kwargs) or dict(root=str(root)))
    record = dict(dataset='animal_classification', generator=release_data.GENERATOR, split='test', data_root='x',
                  arguments=dict(num_train_per_class=100, num_val_per_class=30, num_test_per_class=50,
                                 image_size=[64, 64], seed=3))
    assert regenerate(record, tmp_path) == str(tmp_path)
    assert calls == [dict(num_train_per_class=1, num_val_per_class=1, num_test_per_class=50, image_size=(64, 64),
                          seed=3)]
    with pytest.raises(ValueError, match='generator'):
        regenerate(dict(record, generator='animal-silhouettes-v0'), tmp_path)


@pytest.fixture(scope='module')
def vit_classifier(tmp_path_factory):
    """``(checkpoint, data root)``: the ViT classifier on the installed DINOv2 weights with seeded random adapters
    and head (trained-like, without training), and a tiny animal classification set (one image a class a split)."""
    root = tmp_path_factory.mktemp('vit_cls_release')
    data = make_animal_classification(root / 'data', num_train_per_class=1, num_val_per_class=1,
                                      num_test_per_class=1)['root']
    model = build_task_model(Config.fromfile(VIT_CLS))
    model.init_weights()
    randomise_adapters(model, seed=0)
    torch.nn.init.normal_(model.head.fc.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    checkpoint = root / 'vit_cls.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=tuple(ANIMAL_CLASSES)))),
               checkpoint)
    return checkpoint, data


@pytest.mark.slow
def test_releases_a_vit_classification_task_that_reproduces(vit_classifier, tmp_path):
    checkpoint, data = vit_classifier
    package = release(VIT_CLS, checkpoint, tmp_path / 'release', data, tmp_path / 'work')
    assert package.name.startswith(VIT_CLS.stem + '-')
    verify(package)
    stated = json.loads((package / RESULTS).read_text())
    assert stated['data']['dataset'] == 'animal_classification' and stated['data']['split'] == 'test'
    assert stated['metrics']['num_images'] == 10 and 0 <= stated['metrics']['accuracy/top1'] <= 100
    assert (package / 'adapter.safetensors').stat().st_size < 2e6, 'the ViT adapter: 223,128 float32 parameters'
    reproduce(package, tmp_path / 'reproduce')
