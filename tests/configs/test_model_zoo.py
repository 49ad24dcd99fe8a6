"""The model zoo lists every released config once, with no invented results."""
import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO

RELEASED = sorted(p.relative_to(REPO).as_posix() for folder in ('cascade_rcnn', 'sem_fpn', 'fgvc', 'sparse')
                  for p in (REPO / 'configs' / folder).glob('*.py'))


@pytest.fixture(scope='module')
def entries():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    return [model for metafile in index['Import']
            for model in yaml.safe_load((REPO / metafile).read_text())['Models']]


def test_metafiles_list_every_config_once(entries):
    assert sorted(e['Config'] for e in entries) == RELEASED
    assert all(e['Name'] == Path(e['Config']).stem for e in entries)


def test_no_entry_claims_weights_or_results(entries):
    for e in entries:
        assert e['Weights'] is None and e['Results'] == [], e['Name']
        assert e['Metadata']['Trained Weights'].startswith('not released')


def test_readme_table_links_every_config_once():
    links = []
    for folder in ('cascade_rcnn', 'sem_fpn', 'fgvc', 'sparse'):  # each family's README, as mmdet's configs/*/
        readme = (REPO / 'configs' / folder / 'README.md').read_text()
        table = readme.split('<!-- model-zoo')[1].split('<!-- /model-zoo -->')[0]
        links += [f'configs/{folder}/{name}' for name in re.findall(r'\]\(([^)/]+\.py)\)', table)]
    assert sorted(links) == RELEASED
    summary = (REPO / 'README.md').read_text().split('<!-- model-zoo')[1].split('<!-- /model-zoo -->')[0]
    families = re.findall(r'\]\((configs/\w+)/README\.md\)', summary)
    assert families == ['configs/cascade_rcnn', 'configs/sem_fpn', 'configs/fgvc', 'configs/sparse']
