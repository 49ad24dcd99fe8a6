"""Write the seeded random EfficientFormer checkpoint that the toy configs load as "pretrained".

Without OUT it writes the path the toy configs (configs/toy/) load, relative to the working directory:
run it in the repository root.

    python tools/misc/make_toy_backbone.py    # writes data/toy_backbone/efficientformer-l1_seed0.pth
    python tools/misc/make_toy_backbone.py OUT --arch l3 --seed 1
"""
import argparse

from petah_mm.datasets import make_toy_backbone

#: the default output, relative to the working directory; with the default arch and seed it is the path the toy
#: configs (configs/toy/) load, so that running this in the repository root prepares them
DEFAULT_OUT = 'data/toy_backbone/efficientformer-{arch}_seed{seed}.pth'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', nargs='?', help=f'checkpoint path to write, kept if it exists (default: {DEFAULT_OUT})')
    parser.add_argument('--arch', default='l1', choices=['l1', 'l3', 'l7'])
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    print(make_toy_backbone(args.out or DEFAULT_OUT.format(arch=args.arch, seed=args.seed), args.arch, args.seed))


if __name__ == '__main__':
    main()
