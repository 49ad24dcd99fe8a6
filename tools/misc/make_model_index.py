"""Write the model zoo: ``model-index.yml``, one ``metafile.yml`` and one README table per config folder,
and the short table of families in README.md.

    python tools/misc/make_model_index.py                 # rewrites the metafiles and the tables
    python tools/misc/make_model_index.py --only real     # rebuilds one folder's entries, keeps the others'

Every released config gets an entry with its backbone, method, trainable backbone parameters,
training data and schedule. A config with a released task package (``release/<config name>-<sha256 prefix>/``,
written by ``tools/deployment/release_task.py``) gets ``Weights`` (that folder) and ``Results`` (the metrics that
its ``results.json`` states, measured on the package); every other entry says it has none
(``Weights: null``, ``Results: []``).
Each table goes between the model-zoo markers of its file (``configs/<folder>/README.md``, README.md),
as in mmdet's ``configs/<algorithm>/README.md``; the text around the markers is the folder's own.
"""
import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional

import yaml
from mmengine.config import Config

from petah_mm.adapters import PRESETS
from petah_mm.models import build_backbone_from_config
from petah_mm.tools.deployment.release_task import RESULTS, ZOO_METRICS
from petah_mm.utils.fileio import write_bytes_atomic

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    'cascade_rcnn': dict(collection='PETAH Cascade (Mask) R-CNN', task='Object Detection / Instance Segmentation',
                         family='Cascade (Mask) R-CNN + FPN, COCO'),
    'sem_fpn': dict(collection='PETAH Semantic FPN', task='Semantic Segmentation', family='Semantic FPN, ADE20K'),
    'fgvc': dict(collection='PETAH fine-grained classification', task='Image Classification',
                 family='Linear head, six fine-grained datasets'),
    'sparse': dict(collection='Sparse-PETAH (90 % sparse EfficientFormer-L7)', task='various',
                   family='The three above on a 90 %-sparse EF-L7'),
    # trained on one CPU; the plain ImageNet classifier is the installed weights themselves, not an adaptation
    'real': dict(collection='PETAH on real pretrained backbones', task='various', devices=1,
                 family='Real pretrained backbones (EfficientNet-Lite0, MobileNetV2, DINOv2 ViT-S/14), '
                        'animal silhouettes',
                 plain=('tf-efficientnet-lite0_in1k', )),
}
RELEASE = REPO / 'release'
#: the task of a released package's results, by its metrics (the names of
#: petah_mm.tools.deployment.release_task.ZOO_METRICS)
RESULT_TASKS = {'box AP': 'Object Detection', 'mask AP': 'Instance Segmentation', 'mIoU': 'Semantic Segmentation',
                'top-1': 'Image Classification'}
PAPER = dict(Title='PETAH: Parameter Efficient Task Adaptation for Hybrid Transformers in a resource-limited '
             'Context (Augustin et al., 2024)')
ZOO_START, ZOO_END = '<!-- model-zoo: written by tools/misc/make_model_index.py -->', '<!-- /model-zoo -->'
# {algorithm}_{backbone}-{preset}_{rest}: the backbone is a family and size (ef-l7, swin-t, efv2-s0,
# tf-efficientnet-lite0), maybe sparse
NAME = re.compile(r'(?:(?P<algo>[a-z0-9-]+?)_)?(?P<backbone>[a-z0-9]+(?:-[a-z0-9]+)+?)(?P<sparse>-sparse90)?-'
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


def released_package(path: Path) -> Optional[Path]:
    """The released package of a config, if any: ``release/<config name>-<8 hex digits>/``."""
    name = re.compile(re.escape(path.stem) + '-[0-9a-f]{8}')
    packages = [p for p in RELEASE.glob(f'{path.stem}-*') if name.fullmatch(p.name)]
    if len(packages) > 1:
        raise ValueError(f'{path.name}: more than one released package ({", ".join(p.name for p in packages)}); '
                         'keep the one its model-zoo entry states')
    return packages[0] if packages else None


def dataset_text(data: dict, num_images: int) -> str:
    """The set and split a release was measured on, e.g. ``animal silhouettes val (64 images)``; the first
    releases recorded only the silhouettes' generator (their validation split)."""
    name = data.get('dataset', 'animal_silhouettes').replace('_', ' ')
    return f'{name} {data.get("split", "val")} ({num_images} images)'


def results(package: Path) -> list:
    """The model-index ``Results`` of a package: what its ``results.json`` states it measured."""
    record = json.loads((package / RESULTS).read_text())
    stated = record['metrics']
    dataset = dataset_text(record['data'], stated['num_images'])
    metrics = {ZOO_METRICS[name][0]: round(value * ZOO_METRICS[name][1], 1) for name, value in stated.items()
               if name in ZOO_METRICS}
    return [dict(Task=RESULT_TASKS[name], Dataset=dataset, Metrics={name: value}) for name, value in metrics.items()]


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
        'Batch Size': f'{FOLDERS[path.parent.name].get("devices", 8)}x{cfg.train_dataloader.batch_size}',
        **schedule(cfg),
        'Trained Weights': 'not released: no checkpoint has been trained with this config yet',
    }
    package = released_package(path)
    if package is not None:
        metadata['Trained Weights'] = ('released: adapter, neck and heads; the backbone is the installed pretrained '
                                       'weights of the config. Trained as its results.json and docs/real_data.md '
                                       'state, which may be a shorter schedule than the one above')
    return {'Name': path.stem, 'In Collection': FOLDERS[path.parent.name]['collection'],
            'Config': str(path.relative_to(REPO)), 'Metadata': metadata,
            'Results': results(package) if package else [],
            'Weights': str(package.relative_to(REPO)) if package else None}


def released_configs(folder: str):
    plain = FOLDERS[folder].get('plain', ())
    return sorted(path for path in (REPO / 'configs' / folder).glob('*.py') if path.stem not in plain)


def methods_of(matches) -> list:
    """The presets the configs use, in the order of ``PRESETS``."""
    used = {m['method'] for m in matches}
    return [m for m in PRESETS if m in used]


def backbone_label(match) -> str:
    return match['backbone'].upper() + (' (90 % sparse)' if match['sparse'] else '')


def family_table(entries) -> str:
    """A folder's configs: one row per setting (algorithm, schedule, dataset) and backbone, one column per
    preset; a cell gives the trainable backbone parameters and links the config (next to the README)."""
    rows = defaultdict(dict)
    for e in entries:
        match = NAME.fullmatch(e['Name'])
        params = f'{e["Metadata"]["Trainable Backbone Parameters"] / 1e6:.3f}M'
        rows[(f'{match["algo"] or "linear"} {match["rest"]}', backbone_label(match))][match['method']] = (
            f'[{params}]({Path(e["Config"]).name})')
    methods = methods_of(NAME.fullmatch(e['Name']) for e in entries)
    lines = ['| setting | backbone | ' + ' | '.join(methods) + ' |', '|---' * (len(methods) + 2) + '|']
    settings, backbones = (list(dict.fromkeys(key[i] for key in rows)) for i in (0, 1))  # first-seen order
    order = sorted(rows, key=lambda key: (settings.index(key[0]), backbones.index(key[1])))
    lines += [f'| `{setting}` | {backbone} | ' + ' | '.join(rows[setting, backbone].get(m, '-') for m in methods) + ' |'
              for setting, backbone in order]
    return '\n'.join(lines)


def families_table(entries_by_folder: dict) -> str:
    """README.md's short table: one row per folder, linking its README."""
    lines = ['| family | task | backbones | methods | configs |', '|---|---|---|---|---|']
    for folder, entries in entries_by_folder.items():
        info, matches = FOLDERS[folder], [NAME.fullmatch(e['Name']) for e in entries]
        backbones = ', '.join(dict.fromkeys(m['backbone'].upper() for m in matches))
        lines.append(f'| [{info["family"]}](configs/{folder}/README.md) | {info["task"]} | {backbones} | '
                     f'{", ".join(methods_of(matches))} | {len(entries)} |')
    return '\n'.join(lines)


def with_table(path: Path, table: str) -> str:
    """The text of ``path`` with ``table`` between its model-zoo markers."""
    text = path.read_text() if path.is_file() else ''
    if ZOO_START not in text or ZOO_END not in text:
        raise ValueError(f'{path.relative_to(REPO)}: no model-zoo markers; put the two lines {ZOO_START} and '
                         f'{ZOO_END} where its table goes')
    start, end = text.index(ZOO_START) + len(ZOO_START), text.index(ZOO_END)
    return text[:start] + '\n' + table + '\n' + text[end:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', nargs='+', choices=FOLDERS, metavar='FOLDER',
                        help='rebuild only these folders\' entries (each config is built, which takes minutes for all '
                             'of them); the others are read back from their metafile.yml')
    args = parser.parse_args()
    cache, by_folder, outputs = {}, {}, {}
    for folder, info in FOLDERS.items():
        if args.only and folder not in args.only:
            entries = yaml.safe_load((REPO / 'configs' / folder / 'metafile.yml').read_text())['Models']
        else:
            entries = [entry(path, cache) for path in released_configs(folder)]
        metafile = dict(Collections=[dict(Name=info['collection'], Metadata={'Task': info['task']}, Paper=PAPER,
                                          Code=dict(URL='petah_mm/adapters/backbone.py'))],
                        Models=entries)
        outputs[REPO / 'configs' / folder / 'metafile.yml'] = yaml.safe_dump(metafile, sort_keys=False, width=120)
        readme = REPO / 'configs' / folder / 'README.md'
        outputs[readme] = with_table(readme, family_table(entries))
        by_folder[folder] = entries
    index = [str(path.relative_to(REPO)) for path in outputs if path.name == 'metafile.yml']
    outputs[REPO / 'model-index.yml'] = yaml.safe_dump({'Import': index}, sort_keys=False)
    outputs[REPO / 'README.md'] = with_table(REPO / 'README.md', families_table(by_folder))
    for path, text in outputs.items():  # written only once every file's text is known
        write_bytes_atomic(path, text.encode(), force=True)


if __name__ == '__main__':
    main()
