"""Fine-tune real pretrained backbones (two ImageNet CNNs, the DINOv2 ViT-S/14) on real-material sets with every
method of the paper that applies, from pretrained and from random weights: does PETAH adapt a pretrained backbone
with few parameters? (docs/real_data.md)

    python tools/analysis_tools/transfer_study.py --quick             # the tests' path: a few runs, tiny data
    python tools/analysis_tools/transfer_study.py                     # Lite0 and ViT-S/14, animal and animal-plain
    python tools/analysis_tools/transfer_study.py --full              # every backbone, dataset, method and init
    python tools/analysis_tools/transfer_study.py --no-stabiliser      # the same without clipping and warmup
    python tools/analysis_tools/transfer_study.py --full --backbones dinov2-vit-s14 --datasets animal \
        --methods attn-ft lora-attn-r8 --pretrained-only               # a few rows of a profile

Protocol (the same for every method). For each backbone, dataset, method and init (the pretrained weights, or
random as the control that shows what pretraining buys), every LR of the profile's grid is trained with the first
``selection_seeds`` seeds; the LR with the best *mean* validation top-1 is picked, then trained with the remaining
seeds, and the test split, which no choice saw, is reported as mean ± std over all seeds at that LR. Every run
is mmengine's Runner on the backbone's configs/real classification config (the method's own config where one
exists, as ``-full_`` with its 0.1x backbone LR, else the ``-petah2_`` one with the adapter replaced), with only
the adapter, LR, seed, init, data root, epochs and stabiliser changed; linear probing (``frozen``) is the same
optimisation on cached features (:mod:`petah_mm.tools.studies.linear_probe`). A method that does not apply to a backbone
(attention methods on a CNN) is skipped by the adapter's own rule: the one that refuses to build it.

Stabiliser, on unless ``--no-stabiliser``: gradient clipping by global norm (``optim_wrapper.clip_grad``,
max_norm 1) and the configs' linear warmup (LinearLR over the first epoch, then cosine decay). Without it:
no clipping, and the cosine decay from the first step. A run *collapsed* when its final training loss (the mean of
its last epoch) lies within 1 % of ln(num_classes), a constant prediction; the table counts them per method.
Runs append to ``WORK_DIR/runs.jsonl`` as they finish, so an interrupted study resumes where it stopped.

Output in WORK_DIR: ``transfer_study.json`` (every run and the summary), ``transfer_study.md`` (mean ± std test
top-1, collapses, trainable backbone parameters, seconds per training epoch) and ``transfer_study.png`` (accuracy
against trainable parameters, log x; linear probing, which trains none, as a line). Their names grow with what
differs from the default: ``transfer_study_full.*``, ``transfer_study_no_stabiliser.*``, and ``_selected`` when
``--backbones``, ``--datasets``, ``--methods`` or ``--pretrained-only`` narrowed the profile (its rows only; the
runs are shared by name, so a selection of ``--full`` reuses the default's runs and the default reuses its).
``--out-name STEM`` names them instead, so that two selections keep their own summaries.

Sizes and time. The default profile:

* Lite0 on animal and animal-plain: frozen (cached, both inits), petah2, petah-budget and full: 8 rows, 30 Runner
  runs (LR grids of 2, 2 selection seeds, 3 seeds in all);
* ViT-S/14 on animal: frozen (cached, both inits), petah2, petah-budget and full: 15 Runner runs;
* 50 / 20 / 40 images per class (train / val / test), 5 epochs of batch 32: 80 steps per run.

Time, measured in one piece on a fresh work dir (2026-12-07, 2-core AMD EPYC with AVX-512, quiet): **47.4 min**.
Lite0 ~12 min (a Runner run ~25 s; linear probing with its feature caching ~1 min per dataset); the ViT ~35 min
(probing 2.5 min; a Runner run ~115 s for petah2, ~150 s for full, ~110 s for petah-budget after its ranks). The
first default run (2026-12-06/07, resumed once) also held PETAH with conv rank 8, full fine-tuning from random
weights and full at LR 1e-4 on Lite0: they are in ``--full`` now, and docs/real_data.md keeps their numbers.

``--full`` (all three backbones, all three datasets, every applicable method x both inits, the default's sizes):
70 Runner runs per CNN and dataset (420, ~3.5 h) and 110 ViT runs per dataset (330, ~15 h): **~19 hours** by the
first default run's per-run times (an estimate), more for DoRA and LoKr, which train slower than LoRA.

``petah-budget`` (docs/petah_budget.md) spends PETAH-2's trainable parameter count on per-layer ranks, measured
once per backbone, data set and init from the loss gradient on RANK_IMAGES training images (cached in
``WORK_DIR/ranks/``); its runs and rows record the ranks' digest and the budget beside the parameters they spent.

"""
import copy
import itertools
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.runner import Runner

from petah_mm.adapters import PRESETS, build_plan, preset
from petah_mm.datasets import make_animal_classification, make_animal_plain_classification, make_digit_classification
from petah_mm.models import build_backbone_from_config, without_pretrained
from petah_mm.tools.studies import allocate_ranks, linear_probe
from petah_mm.tools.studies.study_cli import parse_study_args, results_stem, study_setup
from petah_mm.utils import atomic_write, machine, write_bytes_atomic

REPO = Path(__file__).resolve().parents[3]
#: backbone -> its configs/real classification config (PETAH-2; the other methods replace the adapter)
CONFIGS = {
    'tf-efficientnet-lite0': REPO / 'configs/real/tf-efficientnet-lite0-petah2_animal-cls-64px.py',
    'mobilenetv2-100': REPO / 'configs/real/mobilenetv2-100-petah2_animal-cls-64px.py',
    'dinov2-vit-s14': REPO / 'configs/real/dinov2-vit-s14-petah2_animal-cls-112px.py',
}
#: every adapter preset of the paper, plus PETAH with a higher conv rank
METHODS = {name: preset(name) for name in PRESETS}
METHODS['petah8'] = dict(method='petah', rank=8, conv_rank=8)
#: per-layer ranks (``petah-budget``) are measured once per backbone, data set and init: on this many images of the
#: run's train split, the head initialised with this seed (cached in WORK_DIR/ranks/)
RANK_IMAGES, RANK_SEED = 256, 0
#: dataset -> the generator of its train / val / test folders (docs/real_data.md)
DATASETS = {'animal': make_animal_classification, 'animal-plain': make_animal_plain_classification,
            'mnist-5k': make_digit_classification}
#: the stabiliser's clipping: the global gradient norm of every trained tensor (head included) is cut to 1
CLIP_GRAD = dict(max_norm=1.0, norm_type=2)


@dataclass(frozen=True)
class Profile:
    #: backbone -> the methods run on it (those that do not apply to it are skipped)
    methods: Dict[str, Tuple[str, ...]]
    datasets: Tuple[str, ...]
    #: backbone -> the methods also trained from random weights: the control that shows what pretraining buys
    random_control: Dict[str, Tuple[str, ...]]
    seeds: int
    #: the LR is picked by the mean validation top-1 over seeds 0 .. selection_seeds - 1
    selection_seeds: int
    epochs: int
    #: images per class in train / val / test
    counts: Tuple[int, int, int]
    #: method (or 'backbone/method', which wins) -> learning rates of the head (and of the backbone tensors that
    #: train, at the config's LR factor)
    lrs: Dict[str, Tuple[float, ...]] = field(default_factory=dict)
    #: ``optim_wrapper.clip_grad`` and the linear warmup; False: neither
    stabiliser: bool = True
    #: dataset -> backbones run on it; a dataset not named here runs every backbone
    datasets_of: Dict[str, Tuple[str, ...]] = field(default_factory=dict)


#: CNN LRs centred where the first profile's picks fell (frozen and PETAH at the top of their grids; full's 1e-4,
#: which no pick of two profiles chose, dropped); the ViT's from common DINOv2 / LoRA fine-tuning practice (AdamW;
#: full's backbone at 0.1x); linear probing on cached features is cheap, so it gets three
_PETAH = ('petah1', 'petah2', 'petah8', 'petah2-dora', 'petah2-lokr', 'petah-budget')
_GRID = {
    'frozen': (3e-3, 1e-2, 3e-2), 'full': (3e-4, 1e-3), 'attn-ft': (1e-4, 3e-4),
    'lora-attn-r8': (1e-3, 3e-3), 'lora-attn-r16': (1e-3, 3e-3), 'lora-attn-mlp-r8': (1e-3, 3e-3),
    **{name: (3e-3, 1e-2) for name in _PETAH}, **{f'dinov2-vit-s14/{name}': (1e-3, 3e-3) for name in _PETAH},
    'dinov2-vit-s14/full': (3e-4, 1e-3),
}
_ALL = tuple(METHODS)
PROFILES = {
    'quick': Profile(dict.fromkeys(('tf-efficientnet-lite0', 'dinov2-vit-s14'), ('frozen', 'petah2', 'petah-budget')),
                     ('animal', ), {}, seeds=1, selection_seeds=1, epochs=2, counts=(2, 1, 1),
                     lrs={'frozen': (1e-2, ), 'petah2': (1e-3, ), 'petah-budget': (1e-3, )}),
    # sized to fit 1 h on 2 cores (47 min measured; module docstring): 80 steps per run; the ViT on animal only
    'default': Profile({'tf-efficientnet-lite0': ('frozen', 'petah2', 'full', 'petah-budget'),
                        'dinov2-vit-s14': ('frozen', 'petah2', 'full', 'petah-budget')}, ('animal', 'animal-plain'),
                       dict.fromkeys(('tf-efficientnet-lite0', 'dinov2-vit-s14'), ('frozen', )),
                       seeds=3, selection_seeds=2, epochs=5, counts=(50, 20, 40), lrs=_GRID,
                       datasets_of={'animal-plain': ('tf-efficientnet-lite0', )}),
    'full': Profile(dict.fromkeys(CONFIGS, _ALL), tuple(DATASETS), dict.fromkeys(CONFIGS, _ALL), seeds=3,
                    selection_seeds=2, epochs=5, counts=(50, 20, 40), lrs=_GRID),
}


def lr_grid(profile: Profile, backbone: str, method: str) -> Tuple[float, ...]:
    try:
        return profile.lrs.get(f'{backbone}/{method}') or profile.lrs[method]
    except KeyError:
        raise KeyError(f'the profile has no LR grid for method {method!r}; add lrs[{method!r}]') from None


@lru_cache(maxsize=None)
def _weightless_backbone(backbone: str):
    return build_backbone_from_config(str(CONFIGS[backbone]), 'frozen')


def applies(backbone: str, method: str) -> bool:
    """Whether ``method`` applies to ``backbone``: the adapter's own rule, which refuses a method that needs a
    target group the backbone lacks (attention methods on a CNN) and lets PETAH be conv LoRA alone there."""
    try:
        _weightless_backbone(backbone).fit_plan(build_plan(**METHODS[method]))
    except KeyError:
        return False
    return True


def config_of(backbone: str, method: str) -> Path:
    """The method's own config for the backbone if there is one (``-full_``: its 0.1x backbone LR), else
    PETAH-2's, whose adapter the run replaces."""
    own = CONFIGS[backbone].with_name(CONFIGS[backbone].name.replace('-petah2_', f'-{method}_'))
    return own if own.exists() else CONFIGS[backbone]


def run_config(backbone: str, method: str, init: str, lr: float, seed: int, profile: Profile, data_root: Path,
               work_dir: Path, layer_ranks: Optional[dict] = None) -> Config:
    """The backbone's configs/real config with this run's adapter, init, LR, seed, data, schedule and stabiliser;
    ``layer_ranks`` (an :func:`allocate_ranks.allocate` record) fills in the ranks of a budget method."""
    path = config_of(backbone, method)
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.adapter = copy.deepcopy(METHODS[method])
    if layer_ranks is not None:
        cfg.model.backbone.adapter = copy.deepcopy(layer_ranks['adapter'])
    if init == 'random':
        cfg.model.backbone = without_pretrained(cfg.model.backbone)
    cfg.optim_wrapper.optimizer.lr = lr
    warmup, *decay = cfg.param_scheduler
    if warmup.type != 'LinearLR' or len(decay) != 1:
        raise ValueError(f'{path}: the study expects param_scheduler = [LinearLR warmup, one decay], got '
                         f'{[s.type for s in cfg.param_scheduler]}')
    if profile.stabiliser:
        cfg.optim_wrapper.clip_grad = dict(CLIP_GRAD)
    else:
        cfg.optim_wrapper.pop('clip_grad', None)
        cfg.param_scheduler = [dict(decay[0], begin=0)]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    # no validation while training: each run is evaluated once, on the split its phase needs
    cfg.train_cfg = dict(by_epoch=True, max_epochs=profile.epochs, val_interval=profile.epochs + 1)
    cfg.default_hooks.checkpoint = None  # nothing of a study run is kept but its metrics
    cfg.randomness = dict(seed=seed, deterministic=True)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = work_dir.name
    return cfg


def needs_ranks(method: str) -> bool:
    return build_plan(**METHODS[method]).needs_ranks


def layer_ranks_of(backbone: str, dataset: str, init: str, method: str, profile: Profile, work_dir: Path) -> dict:
    """The per-layer ranks of a budget method for (backbone, dataset, init), measured once on the train split with
    RANK_SEED and cached in ``WORK_DIR/ranks/<backbone>_<dataset>_<init>.json`` (reused on resume)."""
    path = work_dir / 'ranks' / f'{backbone}_{dataset}_{init}.json'
    if path.exists():
        return json.loads(path.read_text())
    cfg = run_config(backbone, method, init, lr_grid(profile, backbone, method)[0], RANK_SEED, profile,
                     work_dir / 'data' / dataset, work_dir / 'ranks')
    record = allocate_ranks.allocate(cfg, images=RANK_IMAGES, seed=RANK_SEED)
    write_bytes_atomic(path, json.dumps(record, indent=1).encode())
    return record


def collapsed(final_loss: float, num_classes: int) -> bool:
    """A constant prediction: the final training loss within 1 % of ln(num_classes)."""
    return abs(final_loss - math.log(num_classes)) <= 0.01 * math.log(num_classes)


def train_and_evaluate(cfg: Config, splits: Sequence[str]) -> dict:
    """Train through the Runner; top-1 on each of ``splits``, trainable backbone parameters, s per epoch and the
    final training loss (the mean over the last epoch's iterations, from the message hub)."""
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    seconds = (time.perf_counter() - start) / cfg.train_cfg.max_epochs
    final_loss = runner.message_hub.get_scalar('train/loss').mean(len(runner.train_dataloader))
    result = dict(params=sum(runner.model.backbone.trainable_by_group().values()), epoch_s=round(seconds, 2),
                  final_loss=float(final_loss), path='runner')
    for split in splits:
        metrics = runner.val() if split == 'val' else runner.test()
        result[split] = metrics['accuracy/top1']
    return result


def probe_and_evaluate(cfg: Config, cache: Dict[str, dict]) -> dict:
    """Linear probing on cached features: the frozen backbone's features are extracted once per backbone weights
    and data (``cache``, keyed by the frozen weights' fingerprint and the data root), the head trains on them."""
    model = linear_probe.build_model(cfg)
    key = (model.backbone.frozen_fingerprint(), cfg.train_dataloader.dataset.data_root)
    if key not in cache:
        start = time.perf_counter()
        cache[key] = dict(linear_probe.extract_splits(model, cfg), extract_s=time.perf_counter() - start)
    result = linear_probe.train_probe(model, cfg, cache[key])
    return dict(result, params=sum(model.backbone.trainable_by_group().values()), path='cached-probe',
                extract_s=round(cache[key]['extract_s'], 1))


def combinations(profile: Profile) -> Iterator[Tuple[str, str, str, str]]:
    """(backbone, dataset, method, init) of every summary row: each method that applies pretrained, the controls
    also random."""
    for dataset, (backbone, methods) in itertools.product(profile.datasets, profile.methods.items()):
        if backbone not in profile.datasets_of.get(dataset, (backbone, )):
            continue
        for method in methods:
            if not applies(backbone, method):
                continue
            controls = profile.random_control.get(backbone, ())
            for init in ('pretrained', 'random') if method in controls else ('pretrained', ):
                yield backbone, dataset, method, init


def select(profile: Profile, backbones=None, datasets=None, methods=None, pretrained_only=False) -> Profile:
    """The profile narrowed to the named backbones, datasets and methods (None: all of the profile's), without its
    random-init controls if ``pretrained_only``; the same object when nothing narrows it. A name the profile does
    not hold is refused, with the names it does."""
    def checked(names, held, flag):
        unknown = sorted(set(names) - set(held))
        if unknown:
            raise ValueError(f'{flag} {" ".join(unknown)}: not in this profile; choose from {" ".join(sorted(held))} '
                             '(or use --full, which holds every backbone, dataset and method)')
        return set(names)

    if not (backbones or datasets or methods or pretrained_only):
        return profile
    keep_backbones = checked(backbones or profile.methods, profile.methods, '--backbones')
    keep_datasets = checked(datasets or profile.datasets, profile.datasets, '--datasets')
    keep_methods = checked(methods or (), {m for ms in profile.methods.values() for m in ms}, '--methods') \
        if methods else None

    def narrow(table):
        return {backbone: tuple(m for m in chosen if keep_methods is None or m in keep_methods)
                for backbone, chosen in table.items() if backbone in keep_backbones}

    return replace(profile, methods=narrow(profile.methods),
                   random_control={} if pretrained_only else narrow(profile.random_control),
                   datasets=tuple(d for d in profile.datasets if d in keep_datasets))


def pick_lr(selection: List[dict]) -> float:
    """The LR whose runs have the best mean validation top-1 (the first in grid order on a tie)."""
    by_lr: Dict[float, List[float]] = {}
    for record in selection:
        by_lr.setdefault(record['lr'], []).append(record['val'])
    return max(by_lr, key=lambda lr: statistics.mean(by_lr[lr]))


def summarise(rows: List[Tuple[tuple, List[dict], float]]) -> List[dict]:
    """One summary row per (backbone, dataset, method, init): the picked LR and its runs' test mean ± std, and how
    many runs collapsed, at the picked LR and over the whole grid."""
    summary = []
    for (backbone, dataset, method, init), every, lr in rows:
        runs = [r for r in every if r['lr'] == lr]
        tests = [r['test'] for r in runs]
        summary.append(dict(
            backbone=backbone, dataset=dataset, method=method, init=init, lr=lr,
            val=statistics.mean(r['val'] for r in runs if 'val' in r), test_mean=statistics.mean(tests),
            test_std=statistics.stdev(tests) if len(tests) > 1 else 0.0, seeds=len(tests), params=runs[0]['params'],
            epoch_s=statistics.mean(r['epoch_s'] for r in runs),
            collapsed=sum(r['collapsed'] for r in runs), collapsed_grid=sum(r['collapsed'] for r in every),
            runs_grid=len(every), **{key: runs[0][key] for key in ('budget', 'ranks_digest') if key in runs[0]}))
    return summary


def run_study(profile: Profile, work_dir: Path) -> dict:
    if not 1 <= profile.selection_seeds <= profile.seeds:
        raise ValueError(f'selection_seeds={profile.selection_seeds} must lie in 1 .. seeds={profile.seeds}')
    if profile.epochs < 2:
        raise ValueError(f'epochs={profile.epochs}: the warmup takes the first epoch and the decay the rest; use >= 2')
    train, val, test = profile.counts
    for dataset in profile.datasets:
        DATASETS[dataset](work_dir / 'data' / dataset, num_train_per_class=train, num_val_per_class=val,
                          num_test_per_class=test)
    log = work_dir / 'runs.jsonl'
    done = {}
    if log.exists():
        done = {record['name']: record for record in map(json.loads, log.read_text().splitlines())}
    cache: Dict[tuple, dict] = {}  # the frozen backbones' features, for linear probing

    def run(backbone, dataset, method, init, lr, seed, splits):
        protocol = 'stab' if profile.stabiliser else 'nostab'
        name = f'{backbone}_{dataset}_{method}_{init}_lr{lr:g}_seed{seed}_{protocol}_e{profile.epochs}'
        if name not in done:
            ranks = layer_ranks_of(backbone, dataset, init, method, profile, work_dir) if needs_ranks(method) else None
            cfg = run_config(backbone, method, init, lr, seed, profile, work_dir / 'data' / dataset,
                             work_dir / 'runs' / name, ranks)
            result = probe_and_evaluate(cfg, cache) if method == 'frozen' else train_and_evaluate(cfg, splits)
            if ranks is not None:  # what the ranks are, and what they cost against the budget (PETAH-2's count)
                result.update(ranks_digest=ranks['digest'], budget=ranks['budget'])
            num_classes = cfg.model.head.num_classes
            done[name] = dict(name=name, backbone=backbone, dataset=dataset, method=method, init=init, lr=lr,
                              seed=seed, stabiliser=profile.stabiliser, num_classes=num_classes,
                              collapsed=collapsed(result['final_loss'], num_classes), **result)
            write_bytes_atomic(log, ''.join(json.dumps(r) + '\n' for r in done.values()).encode(), force=True)
        return done[name]

    rows = []
    for row in combinations(profile):
        grid = lr_grid(profile, row[0], row[2])
        every = [run(*row, lr, seed, ('val', 'test')) for lr in grid for seed in range(profile.selection_seeds)]
        lr = pick_lr(every)
        every += [run(*row, lr, seed, ('test', )) for seed in range(profile.selection_seeds, profile.seeds)]
        rows.append((row, every, lr))
    return dict(profile=asdict(profile), runs=list(done.values()), summary=summarise(rows))


def markdown(summary: List[dict]) -> str:
    lines = ['| backbone | dataset | init | method | LR (val-picked) | test top-1 (%) | collapsed (picked LR; grid) '
             '| trainable backbone params | s / epoch |', '|---|---|---|---|---|---|---|---|---|']
    for row in summary:
        lines.append(f'| {row["backbone"]} | {row["dataset"]} | {row["init"]} | {row["method"]} | {row["lr"]:g} | '
                     f'{row["test_mean"]:.1f} ± {row["test_std"]:.1f} (n={row["seeds"]}) | '
                     f'{row["collapsed"]}/{row["seeds"]}; {row["collapsed_grid"]}/{row["runs_grid"]} | '
                     f'{row["params"]:,}{budget_note(row)} | {row["epoch_s"]:.1f} |')
    return '\n'.join(lines) + '\n'


def budget_note(row: dict) -> str:
    """`` (budget 64,182, -0.02%; ranks 1a2b3c4d5e6f)`` for a row whose ranks spent a budget, else ''."""
    if 'budget' not in row:
        return ''
    return f' (budget {row["budget"]:,}, {row["params"] / row["budget"] - 1:+.2%}; ranks {row["ranks_digest"]})'


def plot(summary: List[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = sorted({(r['backbone'], r['dataset'], r['init']) for r in summary})
    for index, (backbone, dataset, init) in enumerate(curves):
        colour = plt.cm.tab20.colors[index % 20]  # --full has 18 curves
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
    if any(r['params'] for r in summary):  # linear probing alone: lines only, no x to scale
        ax.set_xscale('log')
    ax.set_xlabel('trainable backbone parameters' + (' (log)' if ax.get_xscale() == 'log' else ''))
    ax.set_ylabel('test top-1 (%)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(out) as f:
        fig.savefig(f, format='png', dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_study_args(__doc__,
                            "the tests' path: Lite0 and the ViT, frozen, petah2 and petah-budget, tiny data, 2 epochs",
                            'every backbone, dataset and applicable method, each also from random weights',
                            'work_dirs/transfer_study', argv,
                            switches={'--no-stabiliser': 'no gradient clipping and no warmup (both tables, if the '
                                                         'stabiliser changes the ranking)',
                                      '--pretrained-only': 'without the random-init controls'},
                            selections={'--backbones': "only these of the profile's backbones",
                                        '--datasets': "only these of the profile's datasets",
                                        '--methods': "only these of the profile's methods"})
    profile, work_dir = study_setup(args, PROFILES)
    narrowed = select(profile, backbones=args.backbones, datasets=args.datasets, methods=args.methods,
                      pretrained_only=args.pretrained_only)
    parts = (('quick', args.quick), ('full', args.full), ('no_stabiliser', args.no_stabiliser),
             ('selected', narrowed is not profile))
    stem = results_stem(args, '_'.join(['transfer_study'] + [name for name, on in parts if on]))
    profile = replace(narrowed, stabiliser=not args.no_stabiliser)
    start = time.perf_counter()
    results = run_study(profile, work_dir)
    results['wall_min'] = round((time.perf_counter() - start) / 60, 1)  # of this invocation (a resume: the rest)
    results['machine'] = machine.describe()  # of this invocation, as its wall time
    write_bytes_atomic(work_dir / f'{stem}.json', json.dumps(results, indent=2).encode(), force=True)
    table = markdown(results['summary']) + '\n' + machine.summary(results['machine']) + '\n'
    write_bytes_atomic(work_dir / f'{stem}.md', table.encode(), force=True)
    plot(results['summary'], work_dir / f'{stem}.png')
    print(table)
    return results


if __name__ == '__main__':
    main()
