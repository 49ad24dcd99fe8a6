"""Write the model zoo: ``model-index.yml``, one ``metafile.yml`` per config folder, and the README table.

    python tools/misc/make_model_index.py     # rewrites the metafiles and the table in README.md

Every released config gets an entry with its backbone, method, trainable backbone parameters,
training data and schedule. No config has trained weights yet, so every entry says so
(``Weights: null``, ``Results: []``): results are only added with a checkpoint that produced them.
"""
import argparse
import re
from collections import defaultdict
from pathlib import Path

import yaml
from mmengine.config import Config

from petah_mm.adapters import PRESETS
from petah_mm.models import build_backbone_from_config

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    'cascade_rcnn': dict(collection='PETAH Cascade (Mask) R-CNN', task='Object Detection / Instance Segmentation'),
    'sem_fpn': dict(collection='PETAH Semantic FPN', task='Semantic Segmentation'),
    'fgvc': dict(collection='PETAH fine-grained classification', task='Image Classification'),
    'sparse': dict(collection='Sparse-PETAH (90 % sparse EfficientFormer-L7)', task='various'),
}
PAPER = dict(Title='PETAH: Parameter Efficient Task Adaptation for Hybrid Transformers in a resource-limited '
             'Context (Augustin et al., 2024)')
ZOO_START, ZOO_END = '<!-- model-zoo: written by tools/misc/make_model_index.py -->', '<!-- /model-zoo -->'
# {algorithm}_{backbone}-{preset}_{rest}: the backbone is a family and size (ef-l7, swin-t, efv2-s0), maybe sparse
NAME = re.compile(r'(?:(?P<algo>[a-z0-9-]+?)_)?(?P<backbone>[a-z0-9]+-[a-z0-9]+)(?P<sparse>-sparse90)?-'
                  r'(?P<method>' + '|'.join(sorted(map(re.escape, PRESETS), key=len, reverse=True)) + r')_(?P<rest>.*)')


def backbone_stats(cfg: Config, cache: dict) -> dict:
    """The built backbone's class and arch, and its trainable parameters (built once per backbone config)."""
    key = str(cfg.model.backbone)
    if key not in cache:
        backbone = build_backbone_from_config(cfg)
        cache[key] = dict(name=f'{type(backbone).__name__}({backbone.arch_name})',
                          params=sum(backbone.trainable_by_group().values()))
    return cache[key]


def schedule(cfg: Config) -> dict:
    loop = cfg.train_cfg
    if 'max_iters' in loop:
        return {'Iterations': loop.max_iters}
    return {'Epochs': loop.max_epochs}


def entry(path: Path, cache: dict) -> dict:
    cfg = Config.fromfile(path)
    match = NAME.fullmatch(path.stem)
    if match is None:
        raise ValueError(f'{path}: the name is not {{algorithm}}_{{backbone}}-{{preset}}_{{schedule}}_{{dataset}} '
                         f'with a preset of {", ".join(PRESETS)}')
    dataset = cfg.train_dataloader.dataset
    stats = backbone_stats(cfg, cache)
    metadata = {
        'Backbone': match['backbone'] + (' (90 % sparse)' if match['sparse'] else ''),
        'Backbone Class': stats['name'],
        'Adaptation': match['method'],
        'Trainable Backbone Parameters': stats['params'],
        'Training Data': dataset.get('type', '?'),
        'Batch Size': f'8x{cfg.train_dataloader.batch_size}',
        **schedule(cfg),
        'Trained Weights': 'not released: no checkpoint has been trained with this config yet',
    }
    return {'Name': path.stem, 'In Collection': FOLDERS[path.parent.name]['collection'],
            'Config': str(path.relative_to(REPO)), 'Metadata': metadata, 'Results': [], 'Weights': None}


def released_configs(folder: str):
    return sorted((REPO / 'configs' / folder).glob('*.py'))


def markdown(entries) -> str:
    """One row per task/dataset and schedule, one column per preset, links per backbone."""
    table = defaultdict(dict)
    for e in entries:
        match = NAME.fullmatch(e['Name'])
        row = f'{match["algo"] or "linear"} {match["rest"]}' + (' (sparse)' if match['sparse'] else '')
        table[row].setdefault(match['method'], []).append(f'[{match["backbone"].upper()}]({e["Config"]})')
    methods = [m for m in PRESETS if any(m in cells for cells in table.values())]
    lines = ['| config | ' + ' | '.join(methods) + ' |', '|---' * (len(methods) + 1) + '|']
    lines += [f'| `{row}` | ' + ' | '.join(' '.join(cells.get(m, [])) or '-' for m in methods) + ' |'
              for row, cells in table.items()]
    return '\n'.join(lines)


def update_readme(table: str) -> None:
    """Replace what stands between the model-zoo markers of README.md."""
    readme = REPO / 'README.md'
    text = readme.read_text()
    start, end = text.index(ZOO_START) + len(ZOO_START), text.index(ZOO_END)
    readme.write_text(text[:start] + '\n' + table + '\n' + text[end:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.parse_args()
    cache, index, everything = {}, [], []
    for folder, info in FOLDERS.items():
        entries = [entry(path, cache) for path in released_configs(folder)]
        metafile = dict(Collections=[dict(Name=info['collection'], Metadata={'Task': info['task']}, Paper=PAPER,
                                          Code=dict(URL='petah_mm/adapters/backbone.py'))],
                        Models=entries)
        path = REPO / 'configs' / folder / 'metafile.yml'
        path.write_text(yaml.safe_dump(metafile, sort_keys=False, width=120))
        index.append(str(path.relative_to(REPO)))
        everything += entries
    (REPO / 'model-index.yml').write_text(yaml.safe_dump({'Import': index}, sort_keys=False))
    update_readme(markdown(everything))


if __name__ == '__main__':
    main()
