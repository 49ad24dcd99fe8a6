"""Count what one task adds to the shared backbone: the paper's "#Params" (heads excluded).

    python tools/analysis_tools/count_params.py CONFIG [--cfg-options ...]
    python tools/analysis_tools/count_params.py --paper-table    # every EF arch x preset vs the paper
    python tools/analysis_tools/count_params.py --families       # every supported family x preset

Only the backbone is built (no weights are downloaded): the target groups it found (declared or
discovered) are listed, then the trainable parameters per adapter group (attention LoRA, MLP
LoRA, conv LoRA; or the config's factorization, with its own settings) and ``other`` (backbone
weights that train themselves, as in attention or full fine-tuning). The task-owned output norms
train too, but are stored with the heads. A config with per-layer ranks (``adapter.layer_ranks``, written by
``allocate_ranks.py``) also gets one line per adapted layer: its group, rank and parameters, and its budget.

The tables leave out presets whose ranks are measured on data (``petah-budget``): they have a count on a backbone
and a data set only, which ``allocate_ranks.py`` prints.
"""
import argparse

from mmengine.config import Config, DictAction

from petah_mm.adapters import PRESETS, adapted_layers, build_plan, preset
from petah_mm.models import build_backbone_from_config
from petah_mm.models.families import FAMILIES, build_backbone

# The paper's "#Params" (Table 3 for L7/L3, Table 9 for L1), in millions; None = not reported.
PAPER = {
    'lora-attn-r8': dict(l1=0.03, l3=0.11, l7=0.26),
    'lora-attn-r16': dict(l1=None, l3=None, l7=0.52),
    'lora-attn-mlp-r8': dict(l1=None, l3=None, l7=0.75),
    'petah1': dict(l1=0.06, l3=0.17, l7=0.35),
    'petah2': dict(l1=0.09, l3=0.23, l7=0.45),
    'attn-ft': dict(l1=1.5, l3=5.25, l7=15.7),
    'full': dict(l1=11.4, l3=30.3, l7=80.0),
}


def trainable(backbone) -> int:
    return sum(backbone.trainable_by_group().values())


def report(backbone) -> str:
    counts = backbone.trainable_by_group()
    total = sum(counts.values())
    frozen = sum(p.numel() for p in backbone.parameters() if not p.requires_grad)
    lines = [f'{type(backbone).__name__}({backbone.arch_name}): {backbone.adapter_plan.describe()}',
             f'targets {backbone.target_summary}',
             f'{"group":<28}{"layers":>8}{"trainable":>14}']
    lines += [f'{(group + " adapters" if group != "other" else "other (own weights)"):<28}'
              f'{len(backbone.adapted_groups.get(group, [])) or "":>8}{n:>14,}' for group, n in counts.items()]
    lines += [f'{"total, heads excluded":<36}{total:>14,}',
              f'{"output norms (with heads)":<36}{backbone.trainable_output_norms():>14,}',
              f'{"frozen (shared)":<36}{frozen:>14,}']
    if backbone.adapter_plan.layer_ranks is not None:
        lines += ['', layer_rank_table(backbone)]
    return '\n'.join(lines)


def layer_rank_table(backbone) -> str:
    """One line per adapted layer (layer, group, rank, parameters), then the total against the budget."""
    ranks, layers = backbone.adapter_plan.layer_ranks, adapted_layers(backbone)
    width = max(map(len, ranks)) + 2
    lines = [f'{"layer":<{width}}{"group":<8}{"rank":>6}{"params":>10}']
    for group, names in backbone.adapted_groups.items():
        lines += [f'{name:<{width}}{group:<8}{ranks[name]:>6}'
                  f'{sum(p.numel() for p in layers[name].adapter.parameters()):>10,}' for name in names]
    budget = backbone.adapter_plan.budget
    if isinstance(budget, int):
        total = sum(backbone.trainable_by_group().values())
        lines.append(f'{total:,} of a budget of {budget:,} parameters ({total / budget - 1:+.2%})')
    return '\n'.join(lines)


def counted_presets():
    """The presets whose count is one of the backbone alone: not those whose ranks are measured on data."""
    return [name for name in PRESETS if not build_plan(**preset(name)).needs_ranks]


def paper_table_rows():
    """The paper's methods in its order, then every other preset that trains something (PETAH-2 with the
    other factorizations), with '-' for the paper's value."""
    return list(PAPER) + [name for name in counted_presets() if name not in PAPER and name != 'frozen']


def paper_table(out_indices) -> str:
    rows = ['| method | ' + ' | '.join(f'EF-{a.upper()} petah_mm | EF-{a.upper()} paper' for a in ('l1', 'l3', 'l7'))
            + ' |', '|---' * 7 + '|']
    for name in paper_table_rows():
        paper = PAPER.get(name, {})
        cells = []
        for arch in ('l1', 'l3', 'l7'):
            backbone = build_backbone(dict(type='PETAHEfficientFormer', arch=arch, out_indices=out_indices,
                                           reshape_last_feat=out_indices != [3]), preset(name))
            cells += [f'{trainable(backbone) / 1e6:.3f}M', '-' if paper.get(arch) is None else f'{paper[arch]}M']
        rows.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def families_table() -> str:
    """Trainable backbone parameters of every family under every preset; '-' where a method does not apply."""
    names = counted_presets()
    rows = ['| family | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
    for family, backbone_cfg in FAMILIES.items():
        cells = []
        for name in names:
            try:
                cells.append(f'{trainable(build_backbone(backbone_cfg, preset(name))) / 1e6:.3f}M')
            except KeyError:  # e.g. LoRA on the attention of a CNN, or MLP LoRA without MLP linears
                cells.append('-')
        rows.append(f'| {family} | ' + ' | '.join(cells) + ' |')
    skipped = [name for name in PRESETS if name not in names]
    if skipped:
        rows += ['', f'Not counted here: {", ".join(skipped)}, whose ranks are measured on a backbone and its data '
                 '(tools/analysis_tools/allocate_ranks.py prints their count).']
    return '\n'.join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='a petah_mm config (detection, segmentation or classification)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--paper-table', action='store_true',
                        help='markdown table of every arch and method beside the paper\'s Tables 3 and 9')
    parser.add_argument('--families', action='store_true',
                        help='markdown table of every supported backbone family and preset')
    parser.add_argument('--out-indices', type=int, nargs='+', default=[3],
                        help='backbone outputs for --paper-table (default: the classification trunk, as in the paper)')
    args = parser.parse_args()
    if args.paper_table:
        print(paper_table(args.out_indices))
        return
    if args.families:
        print(families_table())
        return
    if args.config is None:
        parser.error('give a CONFIG, --paper-table or --families')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    print(report(build_backbone_from_config(cfg)))


if __name__ == '__main__':
    main()
