"""Generate a deterministic toy dataset for the end-to-end tests and the README demo.

Examples:
    python tools/misc/make_toy_data.py coco data/toy_coco
    python tools/misc/make_toy_data.py ade20k data/toy_ade20k --num-train 64 --size 256 256
    python tools/misc/make_toy_data.py cls data/toy_cls --num-classes 6

Re-running with the same arguments leaves the dataset untouched; different arguments on an
existing directory are refused, so a dataset you trained on is never silently replaced.
"""
import argparse
import inspect
import json
import sys

from petah_mm.datasets import make_toy_ade20k, make_toy_classification, make_toy_coco

# dataset -> (generator, its train-count and val-count parameter names)
GENERATORS = {
    'coco': (make_toy_coco, 'num_train', 'num_val'),
    'ade20k': (make_toy_ade20k, 'num_train', 'num_val'),
    'cls': (make_toy_classification, 'num_train_per_class', 'num_val_per_class'),
}


def _int_at_least(minimum: int):
    """argparse type that rejects bad counts with a message instead of a traceback."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value
    return parse


def _defaults_text() -> str:
    """Read the defaults off the generators so --help can never disagree with them."""
    lines = ['defaults when an option is omitted:']
    for name, (generator, train_arg, val_arg) in GENERATORS.items():
        params = inspect.signature(generator).parameters
        width, height = params['image_size'].default
        per_class = f' per class, {params["num_classes"].default} classes' if name == 'cls' else ''
        counts = f'{params[train_arg].default} train / {params[val_arg].default} val images'
        lines.append(f'  {name:7s} {counts}{per_class}, {width}x{height} px')
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], epilog=_defaults_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dataset', choices=GENERATORS,
                        help='coco: mmdet instance layout; ade20k: mmseg ADE20K layout; '
                             'cls: ImageNet-style folders for mmpretrain CustomDataset')
    parser.add_argument('out_dir', help='dataset root to create (the data_root of a config)')
    parser.add_argument('--seed', type=_int_at_least(0), default=0,
                        help='same seed gives byte-identical files (default: 0)')
    parser.add_argument('--num-train', type=_int_at_least(1),
                        help='training images (per class for cls)')
    parser.add_argument('--num-val', type=_int_at_least(1),
                        help='validation images (per class for cls)')
    parser.add_argument('--size', type=_int_at_least(16), nargs=2, metavar=('W', 'H'),
                        help='image width and height in pixels')
    parser.add_argument('--num-classes', type=_int_at_least(2), help='cls only: number of classes')
    args = parser.parse_args(argv)
    if args.num_classes is not None and args.dataset != 'cls':
        parser.error('--num-classes only applies to the cls dataset')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    generator, train_arg, val_arg = GENERATORS[args.dataset]
    options = {train_arg: args.num_train, val_arg: args.num_val, 'image_size': args.size,
               'num_classes': args.num_classes}
    given = {key: value for key, value in options.items() if value is not None}
    try:
        info = generator(args.out_dir, seed=args.seed, **given)
    except (FileExistsError, ValueError) as error:
        sys.exit(f'error: {error}')
    print(json.dumps(info, indent=2))


if __name__ == '__main__':
    main()
