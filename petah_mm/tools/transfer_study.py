"""Fine-tune real ImageNet CNNs on a real-material set with every CNN method, from pretrained and from random
weights: does PETAH adapt a pretrained backbone with few parameters? (docs/real_data.md)

    python tools/analysis_tools/transfer_study.py --quick             # the tests' path: a few runs, tiny data
    python tools/analysis_tools/transfer_study.py                     # EfficientNet-Lite0 on the animal set
    python tools/analysis_tools/transfer_study.py --full              # both CNNs, both datasets, all controls

Protocol. For each backbone, method and init (ImageNet weights, or random as the control that shows what
pretraining buys), the learning rate is picked from the profile's grid by validation top-1 (seed 0); the
picked LR is then trained with every seed and evaluated once on the test split, which no choice saw (seed 0's
run is the selection run itself). Every run is mmengine's Runner on the configs/real classification config of
its backbone, with only the adapter, LR, seed, init, data root and epochs changed. Runs append to
``WORK_DIR/runs.jsonl`` as they finish, so an interrupted study resumes where it stopped.

Output in WORK_DIR: ``transfer_study.json`` (every run and the summary), ``transfer_study.md`` (mean ± std
test top-1, trainable backbone parameters, seconds per training epoch) and ``transfer_study.png`` (accuracy
against trainable parameters, log x, as the paper's figures; linear probing, which trains none, as a line).
"""
import copy
import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from mmengine.config import Config
from mmengine.runner import Runner

from petah_mm.adapters import preset
from petah_mm.datasets import make_animal_classification, make_digit_classification
from petah_mm.models import without_pretrained
from petah_mm.tools.study_cli import parse_study_args, study_setup
from petah_mm.utils import atomic_write, write_bytes_atomic

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    'tf-efficientnet-lite0': REPO / 'configs/real/tf-efficientnet-lite0-petah2_animal-cls-64px.py',
    'mobilenetv2-100': REPO / 'configs/real/mobilenetv2-100-petah2_animal-cls-64px.py',
}
#: the methods that apply to a CNN: adapter presets, plus PETAH with a higher conv rank
METHODS = {name: preset(name) for name in ('frozen', 'petah1', 'petah2', 'full')}
METHODS['petah8'] = dict(method='petah', rank=8, conv_rank=8)
#: dataset -> the generator of its train / val / test folders (docs/real_data.md)
DATASETS = {'animal': make_animal_classification, 'mnist-5k': make_digit_classification}


@dataclass(frozen=True)
class Profile:
    backbones: Tuple[str, ...]
    datasets: Tuple[str, ...]
    methods: Tuple[str, ...]
    #: the methods also trained from random weights: the control that shows what pretraining buys
    random_control: Tuple[str, ...]
    seeds: int
    epochs: int
    #: images per class in train / val / test
    counts: Tuple[int, int, int]
    #: method -> learning rates of the head (and of the backbone tensors that train: LR factor 1)
    lrs: Dict[str, Tuple[float, ...]] = field(default_factory=dict)


#: two LRs per method (three for full fine-tuning, whose backbone trains at 0.1x), centred where the first
#: profile's picks fell (its frozen and PETAH picks sat at the top of their grids, full's at the bottom)
_GRID = dict(frozen=(1e-2, 3e-2), petah1=(3e-3, 1e-2), petah2=(3e-3, 1e-2), petah8=(3e-3, 1e-2),
             full=(1e-4, 3e-4, 1e-3))
PROFILES = {
    'quick': Profile(('tf-efficientnet-lite0', ), ('animal', ), ('frozen', 'petah2'), (), seeds=1,
                     epochs=2, counts=(2, 1, 1), lrs=dict(frozen=(1e-2, ), petah2=(1e-3, ))),
    # 15 epochs of 1,000 images (465 steps of batch 32) per run: the methods' training curves flatten by then,
    # and the 30 runs fit in an hour on 2 quiet cores; the random control for linear probing and full
    # fine-tuning, the two ends of the range
    'default': Profile(('tf-efficientnet-lite0', ), ('animal', ), tuple(_GRID), ('frozen', 'full'), seeds=3,
                       epochs=15, counts=(100, 30, 50), lrs=_GRID),
    'full': Profile(tuple(CONFIGS), tuple(DATASETS), tuple(_GRID), tuple(_GRID), seeds=3, epochs=15,
                    counts=(100, 30, 50), lrs=_GRID),
}


def run_config(backbone: str, method: str, init: str, lr: float, seed: int, profile: Profile, data_root: Path,
               work_dir: Path) -> Config:
    """The backbone's configs/real config with this run's adapter, init, LR, seed, data and schedule."""
    cfg = Config.fromfile(str(CONFIGS[backbone]))
    cfg.model.backbone.adapter = copy.deepcopy(METHODS[method])
    if init == 'random':
        cfg.model.backbone = without_pretrained(cfg.model.backbone)
    cfg.optim_wrapper.optimizer.lr = lr
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    # no validation while training: each run is evaluated once, on the split its phase needs
    cfg.train_cfg = dict(by_epoch=True, max_epochs=profile.epochs, val_interval=profile.epochs + 1)
    cfg.default_hooks.checkpoint = None  # nothing of a study run is kept but its metrics
    cfg.randomness = dict(seed=seed, deterministic=True)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = work_dir.name
    return cfg


def train_and_evaluate(cfg: Config, splits: Sequence[str]) -> dict:
    """Train through the Runner; top-1 on each of ``splits``, trainable backbone parameters, s per epoch."""
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    seconds = (time.perf_counter() - start) / cfg.train_cfg.max_epochs
    result = dict(params=sum(runner.model.backbone.trainable_by_group().values()), epoch_s=round(seconds, 2))
    for split in splits:
        metrics = runner.val() if split == 'val' else runner.test()
        result[split] = metrics['accuracy/top1']
    return result


def combinations(profile: Profile):
    """(backbone, dataset, method, init) of every summary row: each method pretrained, the controls also random."""
    for backbone, dataset, method in itertools.product(profile.backbones, profile.datasets, profile.methods):
        for init in ('pretrained', 'random') if method in profile.random_control else ('pretrained', ):
            yield backbone, dataset, method, init


def run_study(profile: Profile, work_dir: Path) -> dict:
    train, val, test = profile.counts
    for dataset in profile.datasets:
        DATASETS[dataset](work_dir / 'data' / dataset, num_train_per_class=train, num_val_per_class=val,
                          num_test_per_class=test)
    log = work_dir / 'runs.jsonl'
    done = {}
    if log.exists():
        done = {record['name']: record for record in map(json.loads, log.read_text().splitlines())}

    def run(backbone, dataset, method, init, lr, seed, splits):
        name = f'{backbone}_{dataset}_{method}_{init}_lr{lr:g}_seed{seed}'
        if name not in done:
            cfg = run_config(backbone, method, init, lr, seed, profile, work_dir / 'data' / dataset,
                             work_dir / 'runs' / name)
            done[name] = dict(name=name, backbone=backbone, dataset=dataset, method=method, init=init, lr=lr,
                              seed=seed, **train_and_evaluate(cfg, splits))
            write_bytes_atomic(log, ''.join(json.dumps(r) + '\n' for r in done.values()).encode(), force=True)
        return done[name]

    summary = []
    for backbone, dataset, method, init in combinations(profile):
        selection = [run(backbone, dataset, method, init, lr, 0, ('val', 'test')) for lr in profile.lrs[method]]
        best = max(selection, key=lambda record: record['val'])
        runs = [best] + [run(backbone, dataset, method, init, best['lr'], seed, ('test', ))
                         for seed in range(1, profile.seeds)]
        tests = [record['test'] for record in runs]
        summary.append(dict(backbone=backbone, dataset=dataset, method=method, init=init, lr=best['lr'],
                            val=best['val'], test_mean=statistics.mean(tests),
                            test_std=statistics.stdev(tests) if len(tests) > 1 else 0.0, seeds=len(tests),
                            params=best['params'], epoch_s=statistics.mean(record['epoch_s'] for record in runs)))
    return dict(profile=asdict(profile), runs=list(done.values()), summary=summary)


def markdown(summary: List[dict]) -> str:
    lines = ['| backbone | dataset | init | method | LR (val-picked) | test top-1 (%) | trainable backbone params '
             '| s / epoch |', '|---|---|---|---|---|---|---|---|']
    for row in summary:
        lines.append(f'| {row["backbone"]} | {row["dataset"]} | {row["init"]} | {row["method"]} | {row["lr"]:g} | '
                     f'{row["test_mean"]:.1f} ± {row["test_std"]:.1f} (n={row["seeds"]}) | {row["params"]:,} | '
                     f'{row["epoch_s"]:.1f} |')
    return '\n'.join(lines) + '\n'


def plot(summary: List[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = sorted({(r['backbone'], r['dataset'], r['init']) for r in summary})
    for (backbone, dataset, init), colour in zip(curves, 'bgrcmykbgrcmyk'):
        rows = [r for r in summary if (r['backbone'], r['dataset'], r['init']) == (backbone, dataset, init)]
        trained = sorted((r for r in rows if r['params']), key=lambda r: r['params'])
        style = '-' if init == 'pretrained' else ':'
        ax.errorbar([r['params'] for r in trained], [r['test_mean'] for r in trained],
                    [r['test_std'] for r in trained], fmt=f'o{style}', color=colour,
                    label=f'{backbone}, {dataset} ({init})')
        for r in trained:
            ax.annotate(r['method'], (r['params'], r['test_mean']), fontsize=7)
        for r in rows:
            if not r['params']:  # linear probing trains no backbone parameter: a line, not a point at 0
                ax.axhline(r['test_mean'], color=colour, linestyle=style, linewidth=0.8)
    ax.set_xscale('log')
    ax.set_xlabel('trainable backbone parameters (log)')
    ax.set_ylabel('test top-1 (%)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(out) as f:
        fig.savefig(f, format='png', dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_study_args(__doc__, "the tests' path: two methods, tiny data, 2 epochs",
                            'both backbones and datasets, every method also from random weights',
                            'work_dirs/transfer_study', argv)
    profile, work_dir = study_setup(args, PROFILES)
    start = time.perf_counter()
    results = run_study(profile, work_dir)
    results['wall_min'] = round((time.perf_counter() - start) / 60, 1)  # of this invocation (a resume: the rest)
    write_bytes_atomic(work_dir / 'transfer_study.json', json.dumps(results, indent=2).encode(), force=True)
    table = markdown(results['summary'])
    write_bytes_atomic(work_dir / 'transfer_study.md', table.encode(), force=True)
    plot(results['summary'], work_dir / 'transfer_study.png')
    print(table)
    return results


if __name__ == '__main__':
    main()
