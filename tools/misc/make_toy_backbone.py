"""Write the seeded random EfficientFormer checkpoint that the toy configs load as "pretrained".

    python tools/misc/make_toy_backbone.py data/toy_backbone/efficientformer-l1_seed0.pth
"""
import argparse

from petah_mm.datasets import make_toy_backbone


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', help='checkpoint path to write (kept if it exists)')
    parser.add_argument('--arch', default='l1', choices=['l1', 'l3', 'l7'])
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(make_toy_backbone(args.out, args.arch, args.seed))


if __name__ == '__main__':
    main()
