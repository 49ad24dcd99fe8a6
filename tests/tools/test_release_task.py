"""The released task packages (release/): each is named by the sha256 of its files and refuses a changed file,
holds adapters and heads only (the backbone is the installed ImageNet weights, checked by fingerprint when it
loads), and reproduces the metrics its results.json (and the README) state on the set's validation split."""
import json
import shutil

import pytest

from petah_mm.datasets import make_animal_silhouettes
from petah_mm.deploy import load_task_package
from petah_mm.tools.deployment.release_task import RESULTS, SUMS, evaluate, installed_backbone, verify
from helpers import REPO

PACKAGES = sorted(p for p in (REPO / 'release').glob('*-*') if p.is_dir())


def test_there_are_released_packages():
    names = {p.name.rsplit('-', 1)[0] for p in PACKAGES}
    assert names == {'cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes',
                     'fpn_tf-efficientnet-lite0-petah2_animal-silhouettes'}, names


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


@pytest.mark.slow
@pytest.mark.parametrize('package', PACKAGES, ids=lambda p: p.name)
def test_package_reproduces_its_stated_metrics_on_the_validation_split(package, tmp_path):
    stated = json.loads((package / RESULTS).read_text())
    backbone = installed_backbone(REPO / stated['config'])
    assert backbone.frozen_fingerprint() == stated['backbone_fingerprint']
    model = load_task_package(package, backbone.shared_state_dict())  # checks the adapter's backbone fingerprint
    assert not any(name.startswith('backbone.') for name in json.loads((package / 'config.json').read_text()))
    assert (package / 'task.safetensors').stat().st_size < 20e6, 'a package ships the heads, not a backbone'
    del model
    metrics = stated['metrics']  # each validation scene has its own seed: the split does not depend on num_train
    data = make_animal_silhouettes(tmp_path / 'data', num_train=1, num_val=metrics['num_images'])['root']
    measured = evaluate(package, REPO / stated['config'], backbone.shared_state_dict(), data, tmp_path / 'eval')
    for name, value in metrics.items():
        assert measured[name] == pytest.approx(value, abs=1e-3), f'{name}: measured {measured[name]}, stated {value}'
