"""Food101WithVal: a validation split held out of Food-101's training list, stable across file order and roots."""
import hashlib
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.datasets.categories import FOOD101_CATEGORIES
from mmpretrain.registry import DATASETS
from PIL import Image

from petah_mm.datasets import Food101WithVal
from helpers import REPO

FGVC = REPO / 'configs' / 'fgvc'


def fake_food101(root: Path, train_per_class: int = 53, test_per_class: int = 2) -> Path:
    """The food-101 layout with three classes of tiny images; ids are shuffled, as in the real lists."""
    lines = {'train': [], 'test': []}
    for label, name in enumerate(FOOD101_CATEGORIES[:3]):
        (root / 'images' / name).mkdir(parents=True)
        for index in range(train_per_class + test_per_class):
            image_id = (index * 7919 + label) % 100003
            Image.new('RGB', (8, 8), (40 * label, index, 0)).save(root / 'images' / name / f'{image_id}.jpg')
            lines['train' if index < train_per_class else 'test'].append(f'{name}/{image_id}')
    (root / 'meta').mkdir()
    for split, entries in lines.items():
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(entries) + '\n')
    return root


def names_of(dataset) -> set:
    return {'/'.join(Path(info['img_path']).parts[-2:]) for info in dataset.load_data_list()}


def test_food101_holds_out_50_images_per_class(tmp_path):
    root = fake_food101(tmp_path / 'food-101')
    splits = {split: names_of(Food101WithVal(str(root), split=split))
              for split in ('train', 'val', 'trainval', 'test')}
    assert len(splits['val']) == 3 * 50 and len(splits['train']) == 3 * 3 and len(splits['test']) == 3 * 2
    assert splits['train'] | splits['val'] == splits['trainval'] and not splits['train'] & splits['val']
    # The rule, recomputed independently: per class, the 50 images whose SHA-1 of "class/id.jpg" is smallest.
    by_class = {}
    for name in splits['trainval']:
        by_class.setdefault(name.split('/')[0], []).append(name)
    expected = {name for names in by_class.values()
                for name in sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[:50]}
    assert splits['val'] == expected


def test_food101_split_ignores_file_order_and_data_root(tmp_path):
    root = fake_food101(tmp_path / 'food-101')
    held_out = names_of(Food101WithVal(str(root), split='val'))
    train_list = root / 'meta' / 'train.txt'
    train_list.write_text('\n'.join(reversed(train_list.read_text().split())) + '\n')
    (tmp_path / 'elsewhere').symlink_to(root)
    assert names_of(Food101WithVal(str(tmp_path / 'elsewhere'), split='val')) == held_out


def test_food101_config_loads_images_and_rejects_bad_splits(tmp_path):
    root = fake_food101(tmp_path / 'food-101')
    cfg = Config.fromfile(FGVC / 'ef-l1-petah2_8xb128-100e_food101.py')
    init_default_scope('mmpretrain')
    val = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=str(root),
                              pipeline=[dict(type='LoadImageFromFile')]))
    assert len(val) == 150 and val[0]['img'].shape == (8, 8, 3)
    with pytest.raises(ValueError, match="split must be one of .* got 'validation'"):
        Food101WithVal(str(root), split='validation')
    with pytest.raises(ValueError, match="class 'apple_pie' has 53 training images.*num_val_per_class=53"):
        Food101WithVal(str(root), split='train', num_val_per_class=53)
