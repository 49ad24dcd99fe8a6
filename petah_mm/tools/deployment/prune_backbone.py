"""Prune the conv and linear weights of any config's backbone by magnitude (PETAH Sec. 5.1).

    python tools/model_converters/prune_backbone.py configs/fgvc/ef-l7-petah2_8xb128-100e_food101.py \
        checkpoints/ef-l7-sparse90.pth
    python tools/model_converters/prune_backbone.py CONFIG OUT --checkpoint SRC   # SRC instead of the config's
    python tools/model_converters/prune_backbone.py CONFIG OUT --random-init      # demo: nothing to download

PETAH pre-trains its 90%-sparse backbones with Spartan, which learns the mask during training.
One-shot unstructured magnitude pruning of a trained checkpoint is the stand-in available here;
it yields the same kind of artefact. Biases, norms, layer scales and attention biases stay dense.

The backbone is CONFIG's ``model.backbone`` without adapters: a PETAH backbone is built with the
``frozen`` method, a plain one is wrapped in PETAHBackbone only to tell its linears apart in the
report. Its weights are what its ``init_cfg=dict(type='Pretrained')`` loads (the inner backbone's,
for PETAHBackbone): the config's checkpoint, or ``--checkpoint SRC`` in its place, in any layout
that init loads (for EfficientFormer: mmpretrain, timm or original). A checkpoint that leaves a
conv/linear weight unloaded is refused. ``--random-init`` prunes the seeded initialisation instead.

The output is the backbone's state dict in the layout that ``init_cfg=dict(type='Pretrained',
checkpoint=OUT)`` of CONFIG's backbone loads: mmengine's model layout (``backbone.`` keys, as
mmpretrain's model zoo publishes) or else the bare backbone's keys (as torchvision's ResNets),
whichever loads back exactly. No mask is stored: the mask is ``weight != 0``. Achieved sparsity
per layer kind is printed. An existing OUT is refused unless ``--force``.
"""
import argparse
import logging
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from petah_mm.adapters import AdaptedBackboneMixin, preset
from petah_mm.models import build_backbone_from_config, pretrained_checkpoint
from petah_mm.models.backbones import backbone_class
from petah_mm.sparse import SCOPES, prunable_weights, prune_, sparsity_by_kind, weight_kinds, write_checkpoint
from petah_mm.utils import check_output_path

#: key prefixes of the output, in the order tried: mmengine's model layout, then the bare backbone's
LAYOUTS = ('backbone.', '')


def format_table(table) -> str:
    lines = [f'{"layer kind":<20}{"pruned":>14}{"weights":>14}{"sparsity":>10}']
    lines += [f'{kind:<20}{zeros:>14,}{numel:>14,}{zeros / numel:>10.2%}' for kind, (zeros, numel) in table.items()]
    return '\n'.join(lines)


def dense_config(cfg: Config) -> Config:
    """``cfg`` with a backbone that ``build_backbone_from_config(cfg, 'frozen')`` builds adapter-free: a
    plain backbone is wrapped in PETAHBackbone, whose discovery sorts its linears for the report."""
    backbone = cfg.model.backbone
    if backbone['type'] != 'PETAHBackbone':
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            adapted = issubclass(backbone_class(backbone['type']), AdaptedBackboneMixin)
        if not adapted:
            cfg = cfg.copy()
            cfg.model.backbone = dict(type='PETAHBackbone', backbone=backbone, adapter=preset('frozen'))
    return cfg


def load_backbone(cfg: Config, checkpoint, seed: int):
    """The dense backbone with ``checkpoint`` loaded by its ``init_weights()`` (None: its seeded init), and
    the conv/linear weights the checkpoint did not provide (they are NaN)."""
    torch.manual_seed(seed)
    backbone = build_backbone_from_config(cfg, 'frozen', checkpoint=checkpoint)
    weights = prunable_weights(backbone)
    if checkpoint is not None:
        with torch.no_grad():
            for weight in weights.values():
                weight.fill_(math.nan)
    with quiet_logs(logging.WARNING):  # not mmengine's per-tensor report of init_weights
        backbone.init_weights()
    return backbone, [name for name, weight in weights.items() if weight.isnan().any()]


@contextmanager
def quiet_logs(level: int):
    """Log only from ``level`` up meanwhile."""
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def loadable_layout(cfg: Config, state: dict, seed: int) -> str:
    """The first key prefix in :data:`LAYOUTS` with which ``state`` loads back exactly through the config's
    Pretrained init; a ValueError that lists what each one got wrong if none does."""
    problems = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prefix in LAYOUTS:
            path = Path(tmp) / f'layout{len(problems)}.pth'
            torch.save(dict(state_dict={prefix + k: v for k, v in state.items()}), path)
            try:
                with quiet_logs(logging.ERROR):  # not the key mismatches of a layout that is refused
                    loaded = load_backbone(cfg, str(path), seed)[0].state_dict()
            except (KeyError, RuntimeError, ValueError) as e:
                problems[prefix] = str(e).splitlines()[0][:300]
                continue
            wrong = [k for k, v in state.items() if k not in loaded or not torch.equal(loaded[k], v)]
            if not wrong:
                return prefix
            problems[prefix] = f'{len(wrong)} of {len(state)} tensors not loaded, e.g. {wrong[:3]}'
    tried = '; '.join(f'{prefix or "bare"} keys: {problem}' for prefix, problem in problems.items())
    raise ValueError(f'the pruned state dict does not load back through the Pretrained init_cfg of model.backbone in '
                     f'{cfg.filename} in any layout ({tried}). Its init may convert an upstream layout (as mmdet\'s '
                     'SwinTransformer does with convert_weights=True), which this tool cannot write')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='task config (mmdet, mmseg or mmpretrain) whose model.backbone to prune')
    parser.add_argument('out', help='sparse checkpoint to write (.pth)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--checkpoint', help="weights to prune instead of the config's init_cfg checkpoint")
    source.add_argument('--random-init', action='store_true', help='prune seeded random weights, loading none')
    parser.add_argument('--seed', type=int, default=0, help='seed of the initialisation')
    parser.add_argument('--sparsity', type=float, default=0.9, help='fraction of conv/linear weights set to zero')
    parser.add_argument('--scope', choices=SCOPES, default='layer',
                        help='prune every layer to the target (layer, the default: no layer can be emptied) '
                        'or rank magnitudes over all layers together (global)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--force', action='store_true', help='replace an existing OUT')
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if not isinstance(cfg.get('model'), dict) or not isinstance(cfg.model.get('backbone'), dict):
        parser.error(f'{args.config} has no model.backbone to prune; give a task config with model=dict(backbone=...)')
    checkpoint = None if args.random_init else args.checkpoint or pretrained_checkpoint(cfg.model.backbone)
    if checkpoint is None and not args.random_init:
        parser.error(f'model.backbone of {args.config} loads no checkpoint (no init_cfg=dict(type=\'Pretrained\', '
                     'checkpoint=...)); pass --checkpoint SRC to prune SRC, or --random-init to prune random weights')
    check_output_path(args.out, args.force, inputs=[checkpoint] if checkpoint else [])

    cfg = dense_config(cfg)
    backbone, not_loaded = load_backbone(cfg, checkpoint, args.seed)
    name = f'{type(backbone).__name__}({backbone.arch_name})'
    if not_loaded:
        raise ValueError(f'{checkpoint} did not provide {len(not_loaded)} conv/linear weights of {name}, e.g. '
                         f'{not_loaded[:3]}: its keys are not the layout the backbone\'s Pretrained init_cfg loads '
                         '(check the checkpoint, or the init_cfg prefix with --cfg-options)')
    weights = prune_(backbone, args.sparsity, args.scope)
    table = sparsity_by_kind(weights, weight_kinds(backbone))
    state = backbone.state_dict()
    prefix = loadable_layout(cfg, state, args.seed + 1)
    zeros, numel = table['total']
    meta = dict(config=args.config, backbone=name,
                pruning=dict(method='magnitude', scope=args.scope, target_sparsity=args.sparsity,
                             sparsity=zeros / numel, source=checkpoint or f'random init, seed {args.seed}'))
    size = write_checkpoint(args.out, {prefix + k: v for k, v in state.items()}, meta, force=args.force)

    print(f'{name} from {meta["pruning"]["source"]}, magnitude-pruned ({args.scope}), '
          f'target sparsity {args.sparsity:.1%}')
    print(format_table(table))
    empty = [name for name, w in weights.items() if not w.any()]
    if empty:
        print(f'warning: {len(empty)} layers lost every weight (their output is the bias alone): {empty[:5]}; '
              'a lower sparsity or --scope layer avoids that')
    print(f'wrote {args.out} ({size / 1e6:.1f} MB, {"backbone." if prefix else "bare"} keys)')


if __name__ == '__main__':
    main()
