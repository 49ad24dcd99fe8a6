"""Count what one task adds to the shared backbone: the paper's "#Params" (heads excluded).

    python tools/analysis_tools/count_params.py CONFIG [--cfg-options ...]
    python tools/analysis_tools/count_params.py --paper-table    # every arch x method vs the paper

Only the backbone is built (no weights are downloaded): trainable parameters are listed per
adapter group (attention LoRA, MLP LoRA, conv LoRA) and ``other`` (backbone weights that train
themselves, as in attention or full fine-tuning).
"""
import argparse

from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

import petah_mm  # noqa: F401  (registers PETAHEfficientFormer)

# The paper's "#Params" (Table 3 for L7/L3, Table 9 for L1), in millions; None = not reported.
PAPER = {
    'lora_attn r8': dict(l1=0.03, l3=0.11, l7=0.26),
    'lora_attn r16': dict(l1=None, l3=None, l7=0.52),
    'lora_attn_mlp r8': dict(l1=None, l3=None, l7=0.75),
    'petah1': dict(l1=0.06, l3=0.17, l7=0.35),
    'petah2': dict(l1=0.09, l3=0.23, l7=0.45),
    'attn_ft': dict(l1=1.5, l3=5.25, l7=15.7),
    'full': dict(l1=11.4, l3=30.3, l7=80.0),
}
ADAPTERS = {
    'lora_attn r8': dict(method='lora_attn', rank=8),
    'lora_attn r16': dict(method='lora_attn', rank=16),
    'lora_attn_mlp r8': dict(method='lora_attn_mlp', rank=8),
    'petah1': dict(method='petah', conv_rank=1),
    'petah2': dict(method='petah', conv_rank=2),
    'attn_ft': dict(method='attn_ft'),
    'full': dict(method='full'),
}


def build_backbone(backbone_cfg: dict):
    return MODELS.build(dict(backbone_cfg, init_cfg=None))


def report(backbone) -> str:
    counts = backbone.trainable_by_group()
    total = sum(counts.values())
    frozen = sum(p.numel() for p in backbone.parameters()) - total
    lines = [f'{type(backbone).__name__}({backbone.arch_name}): {backbone.adapter_plan.describe()}',
             f'{"group":<28}{"trainable":>14}']
    lines += [f'{(group + " adapters" if group != "other" else "other (own weights)"):<28}{n:>14,}'
              for group, n in counts.items()]
    lines += [f'{"total, heads excluded":<28}{total:>14,}', f'{"frozen (shared)":<28}{frozen:>14,}']
    return '\n'.join(lines)


def paper_table(out_indices) -> str:
    rows = ['| method | ' + ' | '.join(f'EF-{a.upper()} petah_mm | EF-{a.upper()} paper' for a in ('l1', 'l3', 'l7'))
            + ' |', '|---' * 7 + '|']
    for name, adapter in ADAPTERS.items():
        cells = []
        for arch in ('l1', 'l3', 'l7'):
            backbone = build_backbone(dict(type='PETAHEfficientFormer', arch=arch, out_indices=out_indices,
                                           reshape_last_feat=out_indices != [3], adapter=adapter))
            paper = PAPER[name][arch]
            cells += [f'{sum(backbone.trainable_by_group().values()) / 1e6:.3f}M',
                      '-' if paper is None else f'{paper}M']
        rows.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='a petah_mm config (detection, segmentation or classification)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--paper-table', action='store_true',
                        help='markdown table of every arch and method beside the paper\'s Tables 3 and 9')
    parser.add_argument('--out-indices', type=int, nargs='+', default=[3],
                        help='backbone outputs for --paper-table (default: the classification trunk, as in the paper)')
    args = parser.parse_args()
    if args.paper_table:
        print(paper_table(args.out_indices))
        return
    if args.config is None:
        parser.error('give a CONFIG or --paper-table')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    print(report(build_backbone(cfg.model.backbone)))


if __name__ == '__main__':
    main()
