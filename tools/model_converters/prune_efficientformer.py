"""Prune an EfficientFormer checkpoint's conv and linear weights by magnitude (PETAH Sec. 5.1).

    python tools/model_converters/prune_efficientformer.py CHECKPOINT checkpoints/ef-l7-sparse90.pth --arch l7
    python tools/model_converters/prune_efficientformer.py --random-init --arch l7 checkpoints/ef-l7-sparse90.pth

PETAH pre-trains its 90%-sparse backbones with Spartan, which learns the mask during training.
One-shot unstructured magnitude pruning of a trained checkpoint is the stand-in available here;
it yields the same kind of artefact. CHECKPOINT may be in the mmpretrain, timm or original
layout; ``--random-init`` prunes seeded random weights instead, for demos and benchmarks where
nothing can be downloaded. Biases, norms, layer scales and attention biases stay dense.

The output is the classification trunk in mmpretrain's layout (``state_dict`` with ``backbone.``
keys, no head), so ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` of PETAHEfficientFormer
loads it. No mask is stored: the mask is ``weight != 0``. Achieved sparsity per layer kind is printed.
"""
import argparse

import torch

from petah_mm.models import PETAHEfficientFormer
from petah_mm.sparse import SCOPES, prune_, sparsity_by_kind, weight_kinds, write_checkpoint


def format_table(table) -> str:
    lines = [f'{"layer kind":<20}{"pruned":>14}{"weights":>14}{"sparsity":>10}']
    lines += [f'{kind:<20}{zeros:>14,}{numel:>14,}{zeros / numel:>10.2%}' for kind, (zeros, numel) in table.items()]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', nargs='?', help='EfficientFormer checkpoint to prune (mmpretrain, timm or original)')
    parser.add_argument('out', help='sparse checkpoint to write (.pth)')
    parser.add_argument('--arch', required=True, choices=sorted(PETAHEfficientFormer.arch_settings))
    parser.add_argument('--random-init', action='store_true', help='prune seeded random weights instead of SRC')
    parser.add_argument('--seed', type=int, default=0, help='seed of --random-init')
    parser.add_argument('--sparsity', type=float, default=0.9, help='fraction of conv/linear weights set to zero')
    parser.add_argument('--scope', choices=SCOPES, default='layer',
                        help='prune every layer to the target (layer, the default: no layer can be emptied) '
                        'or rank magnitudes over all layers together (global)')
    args = parser.parse_args(argv)
    if (args.src is None) != args.random_init:
        parser.error('give either a checkpoint SRC to prune or --random-init, not both')

    torch.manual_seed(args.seed)
    backbone = PETAHEfficientFormer(arch=args.arch, out_indices=[3], reshape_last_feat=False,
                                    adapter=dict(method='frozen'))
    if args.src is not None:
        backbone.load_pretrained(args.src)
    weights = prune_(backbone, args.sparsity, args.scope)
    table = sparsity_by_kind(weights, weight_kinds(backbone))
    zeros, numel = table['total']
    meta = dict(arch=args.arch,
                pruning=dict(method='magnitude', scope=args.scope, target_sparsity=args.sparsity,
                             sparsity=zeros / numel, source=args.src or f'random init, seed {args.seed}'))
    size = write_checkpoint(args.out, {f'backbone.{k}': v for k, v in backbone.state_dict().items()}, meta)

    print(f'EfficientFormer-{args.arch} magnitude-pruned ({args.scope}), target sparsity {args.sparsity:.1%}')
    print(format_table(table))
    empty = [name for name, w in weights.items() if not w.any()]
    if empty:
        print(f'warning: {len(empty)} layers lost every weight (their output is the bias alone): {empty[:5]}; '
              'a lower sparsity or --scope layer avoids that')
    print(f'wrote {args.out} ({size / 1e6:.1f} MB)')


if __name__ == '__main__':
    main()
