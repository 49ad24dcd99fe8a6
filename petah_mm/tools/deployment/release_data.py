"""Which data a released task was measured on, recorded so that anyone can regenerate exactly that split.

The real sets are generated (:mod:`petah_mm.datasets.real_silhouettes`), and each writes a manifest of its
arguments. A release records that manifest and the split its config's test loader reads (the silhouettes' ``val``,
the classification set's ``test``); :func:`regenerate` writes the same split again, every other split cut to one
image (each split is seeded on its own, so its images do not depend on the other splits' sizes).
"""
import json
import re
from pathlib import Path
from typing import Callable, Dict, Union

from petah_mm.datasets import make_animal_classification, make_animal_plain_classification, make_animal_silhouettes
from petah_mm.datasets.real_silhouettes import GENERATOR
from petah_mm.datasets.toy_data import MANIFEST_NAME

PathLike = Union[str, Path]
#: the manifest's ``dataset`` -> the function that writes it
GENERATORS: Dict[str, Callable[..., dict]] = dict(
    animal_silhouettes=make_animal_silhouettes, animal_classification=make_animal_classification,
    animal_plain_classification=make_animal_plain_classification)
#: a count argument of a generator: ``num_<split>`` or ``num_<split>_per_class``
COUNT = re.compile(r'num_(?P<split>[a-z]+?)(?:_per_class)?')
#: manifest entries that are not the generator's arguments
NOT_ARGUMENTS = ('version', 'dataset', 'generator', 'summary')


def read_manifest(data_root: PathLike) -> dict:
    path = Path(data_root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no data manifest; --data-root must be a set that '
                                'tools/misc/make_real_data.py wrote (a release records how to regenerate its data)')
    manifest = json.loads(path.read_text())
    if manifest.get('dataset') not in GENERATORS:
        raise ValueError(f'{path}: dataset {manifest.get("dataset")!r} is not one of the real sets a release is '
                         f'measured on ({", ".join(GENERATORS)})')
    return manifest


def evaluated_split(manifest: dict, dataset_cfg: dict) -> str:
    """The split of the set that a test loader's dataset reads, from its ``data_prefix`` and ``ann_file``."""
    splits = [m['split'] for key in manifest if (m := COUNT.fullmatch(key))]
    where = json.dumps([dataset_cfg.get('data_prefix'), dataset_cfg.get('ann_file')])
    found = [split for split in splits if re.search(rf'\b{split}', where)]
    if len(found) != 1:
        raise ValueError(f'the test loader reads {where}: expected exactly one of the splits {splits} of the '
                         f'{manifest["dataset"]} set in it, found {found}')
    return found[0]


def data_record(data_root: PathLike, dataset_cfg: dict) -> dict:
    """What ``results.json`` states of the data: the generator, its arguments and the split measured on."""
    manifest = read_manifest(data_root)
    return dict(dataset=manifest['dataset'], generator=manifest['generator'], data_root=str(data_root),
                split=evaluated_split(manifest, dataset_cfg),
                arguments={k: v for k, v in manifest.items() if k not in NOT_ARGUMENTS})


def regenerate(record: dict, root: PathLike) -> str:
    """Write the recorded split again under ``root`` (the other splits one image each); returns the data root.

    The first releases (2026-12-05) recorded only ``generator='make_animal_silhouettes'``: that set at its default
    arguments, whose validation split they were measured on."""
    if 'arguments' not in record:
        if record.get('generator') != 'make_animal_silhouettes':
            raise ValueError(f'data record {record}: neither generator arguments nor a first-release record')
        return make_animal_silhouettes(root, num_train=1)['root']
    if record['generator'] != GENERATOR:
        raise ValueError(f'the release was measured on data of generator {record["generator"]!r}; this petah_mm '
                         f'writes {GENERATOR!r}, other images: check out the petah_mm version that released it')
    arguments = {k: (v if COUNT.fullmatch(k)['split'] == record['split'] else 1) if COUNT.fullmatch(k) else v
                 for k, v in record['arguments'].items()}
    arguments['image_size'] = tuple(arguments['image_size'])
    return GENERATORS[record['dataset']](root, **arguments)['root']
