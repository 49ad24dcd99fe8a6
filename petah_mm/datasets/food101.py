"""Food-101 with the validation split PETAH holds out of the training images (Sec. 4, App. A.1)."""
import hashlib
from collections import defaultdict
from typing import List

from mmpretrain.datasets import Food101
from mmpretrain.registry import DATASETS


@DATASETS.register_module()
class Food101WithVal(Food101):
    """Food-101 whose official train split is divided into 'train' and 'val'.

    Food-101 has no validation split, so PETAH holds out 50 training images per class for the
    hyperparameter search (Table 8: 70,700 train, 5,050 val, 25,250 test). The held-out images
    of a class are the ``num_val_per_class`` whose SHA-1 of ``class/image`` sorts first: a
    pseudo-random choice that no RNG implementation, file order or data root can change.

    Args:
        data_root: the ``food-101`` directory, as for mmpretrain's ``Food101``.
        split: 'train' (official train minus the held-out images), 'val' (the held-out
            images), 'trainval' (the official train split) or 'test' (the official test split).
        num_val_per_class: training images held out per class.
    """

    SPLITS = ('train', 'val', 'trainval', 'test')

    def __init__(self, data_root: str, split: str = 'train', num_val_per_class: int = 50, **kwargs):
        if split not in self.SPLITS:
            raise ValueError(f'Food101WithVal: split must be one of {self.SPLITS}, got {split!r}')
        if not isinstance(num_val_per_class, int) or num_val_per_class < 1:
            raise ValueError(f'Food101WithVal: num_val_per_class must be a positive integer, '
                             f'got {num_val_per_class!r}')
        # ``split`` is what Food101 reads (its file); ``subset`` is what this dataset returns.
        self.subset = split
        self.num_val_per_class = num_val_per_class
        super().__init__(data_root, split='test' if split == 'test' else 'train', **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        if self.subset in ('trainval', 'test'):
            return data_list
        held_out = self.held_out_paths(data_list)
        return [info for info in data_list if (info['img_path'] in held_out) == (self.subset == 'val')]

    def held_out_paths(self, data_list: List[dict]) -> set:
        by_class = defaultdict(list)
        for info in data_list:
            by_class[info['gt_label']].append(info['img_path'])
        held_out = set()
        for label, paths in by_class.items():
            if len(paths) <= self.num_val_per_class:
                raise ValueError(
                    f'Food101WithVal: class {self.METAINFO["classes"][label]!r} has {len(paths)} '
                    f'training images in {self.ann_file}, too few to hold out '
                    f'num_val_per_class={self.num_val_per_class} and still train on it')
            held_out.update(sorted(paths, key=_relative_digest)[:self.num_val_per_class])
        return held_out


def _relative_digest(img_path: str) -> str:
    """SHA-1 of ``class/image.jpg``, the part of the path that does not depend on the data root."""
    return hashlib.sha1('/'.join(img_path.replace('\\', '/').split('/')[-2:]).encode()).hexdigest()
