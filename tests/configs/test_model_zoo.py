"""The model zoo lists every released config once, with no invented results: only a config with a released
package under release/ has weights, and its results are the ones that package's results.json states."""
import json
import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO

FOLDERS = ('cascade_rcnn', 'sem_fpn', 'fgvc', 'sparse', 'real')
#: configs that are no adaptation (the installed ImageNet classifier itself), so no model-zoo entry
PLAIN = ('configs/real/tf-efficientnet-lite0_in1k.py', )
RELEASED = sorted(p.relative_to(REPO).as_posix() for folder in FOLDERS
                  for p in (REPO / 'configs' / folder).glob('*.py') if p.relative_to(REPO).as_posix() not in PLAIN)


@pytest.fixture(scope='module')
def entries():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    return [model for metafile in index['Import']
            for model in yaml.safe_load((REPO / metafile).read_text())['Models']]


def test_metafiles_list_every_config_once(entries):
    assert sorted(e['Config'] for e in entries) == RELEASED
    assert all(e['Name'] == Path(e['Config']).stem for e in entries)


def test_only_released_packages_claim_weights_and_results(entries):
    released = {e['Name'] for e in entries if e['Weights'] is not None}
    for e in entries:
        if e['Name'] not in released:
            assert e['Results'] == [] and e['Metadata']['Trained Weights'].startswith('not released'), e['Name']
            continue
        package = REPO / e['Weights']
        assert e['Config'].startswith('configs/real/') and package.parent == REPO / 'release', e['Name']
        assert re.fullmatch(re.escape(e['Name']) + '-[0-9a-f]{8}', package.name), package.name
        record = json.loads((package / 'results.json').read_text())
        stated = record['metrics']
        scale = {'box AP': ('coco/bbox_mAP', 100), 'mask AP': ('coco/segm_mAP', 100), 'mIoU': ('mIoU', 1),
                 'top-1': ('accuracy/top1', 1)}
        dataset, split = record['data'].get('dataset', 'animal_silhouettes'), record['data'].get('split', 'val')
        for result in e['Results']:
            (name, value), = result['Metrics'].items()
            key, factor = scale[name]
            assert value == round(stated[key] * factor, 1), (e['Name'], name, value, stated)
            assert result['Dataset'] == f'{dataset.replace("_", " ")} {split} ({stated["num_images"]} images)'
        assert e['Results'], e['Name']
    # the EfficientFormer entries stay honestly untrained
    assert not any(e['Weights'] for e in entries if not e['Config'].startswith('configs/real/'))


def test_readme_table_links_every_config_once():
    links = []
    for folder in FOLDERS:  # each family's README, as mmdet's configs/*/
        readme = (REPO / 'configs' / folder / 'README.md').read_text()
        table = readme.split('<!-- model-zoo')[1].split('<!-- /model-zoo -->')[0]
        links += [f'configs/{folder}/{name}' for name in re.findall(r'\]\(([^)/]+\.py)\)', table)]
    assert sorted(links) == RELEASED
    summary = (REPO / 'README.md').read_text().split('<!-- model-zoo')[1].split('<!-- /model-zoo -->')[0]
    families = re.findall(r'\]\((configs/\w+)/README\.md\)', summary)
    assert families == [f'configs/{folder}' for folder in FOLDERS]
