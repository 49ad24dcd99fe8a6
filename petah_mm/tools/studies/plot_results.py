"""Draw the PETAH paper's Figure 2 from a results file.

    python tools/analysis_tools/plot_results.py RESULTS.json OUT.png [--title ...]
    python tools/analysis_tools/plot_results.py docs/paper_table3.json docs/figure2_paper.png \
        --title "Reference: the PETAH paper's Table 3 (not measured by petah_mm)"

RESULTS.json is what tools/analysis_tools/hparam_grid.py writes: ``{"results": [{"arch", "method"
(an adapter preset's name), "dataset", "accuracy", "params", "flops"}, ...]}``. Accuracies are
averaged over the datasets of each (arch, method). Left: task parameters against mean accuracy, a line per method
family, a marker per model size. Right: GFLOPs against mean accuracy of the PETAH-2 and LoRA
models, the circle area growing with the parameter count of the backbone.
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from petah_mm.adapters.presets import FAMILIES  # noqa: E402

MARKERS = {'l7': 'o', 'l3': 's', 'l1': '^', 'vit-b': 'D', 'vit-s': 'v'}
ARCH_NAMES = {'l1': 'EF L1', 'l3': 'EF L3', 'l7': 'EF L7', 'vit-b': 'ViT-B', 'vit-s': 'ViT-S'}
# backbone parameters in millions (EF from count_params.py --paper-table, ViT from the paper's Table 1)
BACKBONE_SIZE = {'l1': 11.4, 'l3': 30.4, 'l7': 80.7, 'vit-b': 85.7, 'vit-s': 21.6}


def mean_accuracy(results):
    """(arch, method) -> (mean accuracy, params, flops), over the datasets present for it."""
    groups = defaultdict(list)
    for record in results:
        groups[record['arch'], record['method']].append(record)
    return {key: (sum(r['accuracy'] for r in rows) / len(rows), rows[0]['params'], rows[0]['flops'])
            for key, rows in groups.items()}


def plot_params(ax, means):
    by_family = defaultdict(list)
    for (arch, method), (acc, params, _) in means.items():
        if params > 0:  # linear probing has no task parameters and no place on a log axis
            by_family[FAMILIES.get(method, method), arch].append((params / 1e6, acc))
    colours = {}
    for (family, arch), points in sorted(by_family.items()):
        colour = colours.setdefault(family, f'C{len(colours)}')
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, color=colour, marker=MARKERS.get(arch, 'x'))
    families = [Line2D([], [], color=c, label=f) for f, c in colours.items()]
    archs = [Line2D([], [], color='grey', ls='', marker=MARKERS.get(a, 'x'), label=ARCH_NAMES.get(a, a))
             for a in sorted({arch for _, arch in by_family})]
    ax.legend(handles=families + archs, fontsize=8)
    ax.set(xscale='log', xlabel='task parameters (M, log scale)', ylabel='mean accuracy (%)')


def plot_flops(ax, means):
    for (arch, method), (acc, _, flops) in sorted(means.items()):
        if method in ('petah2', 'lora-attn-r8') and flops and (method == 'petah2' or arch.startswith('vit')):
            ax.scatter(flops, acc, s=8 * BACKBONE_SIZE.get(arch, 20), alpha=0.5, marker=MARKERS.get(arch, 'o'))
            label = 'PETAH-2' if method == 'petah2' else 'LoRA ATTN r=8'
            ax.annotate(f'{ARCH_NAMES.get(arch, arch)} {label}', (flops, acc), fontsize=8, ha='center')
    ax.set(xlabel='GFLOPs', ylabel='mean accuracy (%)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('results', help='results JSON (hparam_grid.py output or docs/paper_table3.json)')
    parser.add_argument('out', help='PNG to write')
    parser.add_argument('--title', default=None, help='figure title, e.g. where the numbers come from')
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text()).get('results')
    if not results:
        raise ValueError(f'{args.results} has no "results" records to plot')
    means = mean_accuracy(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_params(left, means)
    plot_flops(right, means)
    fig.suptitle(args.title or Path(args.results).name)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f'wrote {args.out} from {len(results)} records ({len(means)} models)')


if __name__ == '__main__':
    main()
