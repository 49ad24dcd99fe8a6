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
from mmengine.registry import MODELS

import petah_mm  # noqa: F401  (registers PETAHEfficientFormer)

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
METHOD_ORDER = ('frozen', 'full', 'attn-ft', 'lora-attn-r8', 'lora-attn-r16', 'lora-attn-mlp-r8', 'petah1', 'petah2')
NAME = re.compile(r'(?P<algo>.*?)_?ef-(?P<arch>l\d)(?P<sparse>-sparse90)?-(?P<method>[a-z0-9-]+?)_(?P<rest>.*)')


def trainable_params(backbone_cfg: dict, cache: dict) -> int:
    key = (backbone_cfg['arch'], str(backbone_cfg['adapter']), str(backbone_cfg.get('out_indices')))
    if key not in cache:
        backbone = MODELS.build(dict(backbone_cfg, init_cfg=None))
        cache[key] = sum(backbone.trainable_by_group().values())
    return cache[key]


def schedule(cfg: Config) -> dict:
    loop = cfg.train_cfg
    if 'max_iters' in loop:
        return {'Iterations': loop.max_iters}
    return {'Epochs': loop.max_epochs}


def entry(path: Path, cache: dict) -> dict:
    cfg = Config.fromfile(path)
    match = NAME.fullmatch(path.stem)
    dataset = cfg.train_dataloader.dataset
    metadata = {
        'Backbone': f'EfficientFormer-{match["arch"].upper()}' + (' (90 % sparse)' if match['sparse'] else ''),
        'Adaptation': match['method'],
        'Trainable Backbone Parameters': trainable_params(cfg.model.backbone, cache),
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
    """One row per task/dataset and schedule, one column per method, links per architecture."""
    table = defaultdict(dict)
    for e in entries:
        match = NAME.fullmatch(e['Name'])
        row = f'{match["algo"] or "linear"} {match["rest"]}' + (' (sparse)' if match['sparse'] else '')
        table[row].setdefault(match['method'], []).append(f'[{match["arch"].upper()}]({e["Config"]})')
    methods = [m for m in METHOD_ORDER if any(m in cells for cells in table.values())]
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
                                          Code=dict(URL='petah_mm/models/backbones/petah_efficientformer.py'))],
                        Models=entries)
        path = REPO / 'configs' / folder / 'metafile.yml'
        path.write_text(yaml.safe_dump(metafile, sort_keys=False, width=120))
        index.append(str(path.relative_to(REPO)))
        everything += entries
    (REPO / 'model-index.yml').write_text(yaml.safe_dump({'Import': index}, sort_keys=False))
    update_readme(markdown(everything))


if __name__ == '__main__':
    main()
