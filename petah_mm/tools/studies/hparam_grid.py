"""Grid-search the learning rate, weight decay and LR factor of a classification config (PETAH App. A.1).

    python tools/analysis_tools/hparam_grid.py configs/fgvc/ef-l7-petah2_8xb128-200e_aircraft.py
    python tools/analysis_tools/hparam_grid.py CONFIG --lr 0.005 0.01 --weight-decay 0 2e-4 --lr-mult 1 10
    python tools/analysis_tools/hparam_grid.py CONFIG --dry-run    # write the configs, train on a cluster
    python tools/analysis_tools/hparam_grid.py CONFIG --collect    # then gather their results

Grids default to the paper's Table 7 for the config's method. The LR factor is the ``lr_mult`` of
``optim_wrapper.paramwise_cfg.custom_keys['backbone']``: on the adapters for LoRA and PETAH, on
the backbone weights for full and attention fine-tuning; linear probing has none. Each point is a
config ``WORK_DIR/<point>.py`` trained by tools/train.py into ``WORK_DIR/<point>/``, one after the
other; a finished point is not trained again and an interrupted one resumes. A point's accuracy is
the validation top-1 after the last epoch, read from mmengine's ``vis_data/scalars.json``.

The results file (``--out``, default ``WORK_DIR/hparam_grid.json``) is what the plot tools read:
``{"results": [record, ...], "best": record}`` with records ``{"arch", "method" (the adapter preset's
name, e.g. ``petah2``, see petah_mm.adapters.PRESETS), "dataset", "lr",
"weight_decay", "lr_mult" (null for linear probing), "accuracy" (top-1, %), "params" (trainable
backbone parameters, heads excluded), "flops" (GFLOPs at the test crop, adapters merged, one
multiply-add counted as one FLOP as mmengine does; null if the test pipeline has no CenterCrop)}``.
"""
import argparse
import copy
import itertools
import json
import os.path as osp
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import MODELS, init_default_scope

from petah_mm.adapters import preset_name
from petah_mm.models import without_pretrained
from petah_mm.utils.fileio import write_bytes_atomic

TRAIN = Path(__file__).resolve().parents[3] / 'tools' / 'train.py'  # the checkout's (an editable install)
LR_KEY = 'backbone'  # the custom_keys entry whose lr_mult is the LR factor
# PETAH Table 7: grids per method family; linear probing has no LR factor.
WEIGHT_DECAYS = [0.0, 2e-4, 2e-3, 2e-2]
TABLE7 = {
    'frozen': dict(lr=[0.005, 0.01, 0.05], lr_mult=[]),
    'full': dict(lr=[0.001, 0.005, 0.01], lr_mult=[0.001, 0.1, 1.0]),
    'attn_ft': dict(lr=[0.001, 0.005, 0.01], lr_mult=[0.001, 0.1, 1.0]),
    'lora_attn': dict(lr=[0.001, 0.005, 0.01], lr_mult=[0.1, 1.0, 5.0, 10.0]),
    'lora_attn_mlp': dict(lr=[0.001, 0.005, 0.01], lr_mult=[0.1, 1.0, 5.0, 10.0]),
    'petah': dict(lr=[0.001, 0.005, 0.01], lr_mult=[0.1, 1.0, 5.0, 10.0]),
}


class Point(NamedTuple):
    lr: float
    weight_decay: float
    lr_mult: Optional[float]

    @property
    def name(self) -> str:
        mult = '' if self.lr_mult is None else f'_mult{self.lr_mult:g}'
        return f'lr{self.lr:g}_wd{self.weight_decay:g}{mult}'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', help='a classification config whose validation split is not the test split')
    parser.add_argument('--lr', type=float, nargs='+', help="the head's learning rates (default: Table 7)")
    parser.add_argument('--weight-decay', type=float, nargs='+', help='weight decays (default: Table 7)')
    parser.add_argument('--lr-mult', type=float, nargs='+',
                        help='LR factors of the adapters or backbone weights (default: Table 7)')
    parser.add_argument('--work-dir', help='where point configs and runs go '
                        '(default: work_dirs/hparam_grid/<config name>)')
    parser.add_argument('--out', help='results file (default: WORK_DIR/hparam_grid.json)')
    parser.add_argument('--metric', default='accuracy/top1', help='validation metric to maximise')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--dry-run', action='store_true',
                      help='only write one config per point and print the commands that train them')
    mode.add_argument('--collect', action='store_true',
                      help='train nothing; gather the results of runs that finished elsewhere')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings for every point, e.g. train_cfg.max_epochs=10')
    return parser.parse_args()


def load_config(path: str, cfg_options: Optional[dict]) -> Config:
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    split = cfg.val_dataloader.dataset.get('split')
    if split == 'test':
        raise ValueError(
            f'{path}: val_dataloader.dataset.split is {split!r} ({cfg.val_dataloader.dataset.type} has no '
            'validation split), so the grid would pick hyperparameters on the test set. PETAH reuses the '
            'best Aircraft and DTD points for CUB, Cars and Pets instead (App. A.1)')
    return cfg


def build_grid(method: str, args) -> List[Point]:
    if method not in TABLE7:
        raise ValueError(f'model.backbone.adapter.method {method!r} has no Table 7 grid; '
                         f'known: {sorted(TABLE7)}')
    defaults = TABLE7[method]
    lr_mults = defaults['lr_mult'] if args.lr_mult is None else args.lr_mult
    if method == 'frozen' and lr_mults:
        raise ValueError(f'--lr-mult {lr_mults}: method {method!r} trains no backbone parameter, '
                         'so there is no LR factor to search')
    return [Point(*values) for values in itertools.product(
        args.lr or defaults['lr'], args.weight_decay or WEIGHT_DECAYS, lr_mults or [None])]


def point_config(cfg: Config, point: Point, work_dir: str) -> Config:
    cfg = copy.deepcopy(cfg)
    cfg.optim_wrapper.optimizer.lr = point.lr
    cfg.optim_wrapper.optimizer.weight_decay = point.weight_decay
    if point.lr_mult is not None:
        custom_keys = cfg.optim_wrapper.get('paramwise_cfg', {}).get('custom_keys', {})
        if LR_KEY not in custom_keys:
            raise KeyError(f'optim_wrapper.paramwise_cfg.custom_keys has no {LR_KEY!r} entry (it has '
                           f'{sorted(custom_keys)}), so there is no lr_mult to set to {point.lr_mult:g}')
        custom_keys[LR_KEY].lr_mult = point.lr_mult
    cfg.work_dir = work_dir
    return cfg


def final_metric(work_dir: str, metric: str, final_step: int) -> Optional[float]:
    """The metric logged at ``final_step`` (the last epoch), or None while the run is unfinished."""
    for scalars in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if metric in record and record['step'] == final_step:
                return float(record[metric])
    return None


def model_stats(cfg: Config) -> Dict:
    """Arch, method, trainable backbone parameters and GFLOPs of the config's model, built without weights."""
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(dict(cfg.model, backbone=without_pretrained(cfg.model.backbone))).eval()
    backbone = model.backbone
    stats = dict(arch=backbone.arch_name, method=preset_name(backbone.adapter_cfg) or backbone.adapter_plan.method,
                 params=sum(backbone.trainable_by_group().values()), flops=None)
    crops = [t['crop_size'] for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'CenterCrop']
    if not crops:
        print_log('no CenterCrop in test_dataloader.dataset.pipeline: flops are left null', logger='current')
        return stats
    width, height = (crops[-1], crops[-1]) if isinstance(crops[-1], int) else crops[-1]
    backbone.merge_adapters()  # the deployed model: adapters cost nothing once merged
    analyzer = FlopAnalyzer(model, (torch.zeros(1, 3, height, width), ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    stats['flops'] = analyzer.total() / 1e9
    return stats


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    name = osp.splitext(osp.basename(args.config))[0]
    work_root = Path(args.work_dir or osp.join('work_dirs', 'hparam_grid', name)).resolve()
    method = cfg.model.backbone.adapter.method
    grid = build_grid(method, args)
    train_cfg = cfg.train_cfg
    final_step = train_cfg.max_epochs if train_cfg.get('by_epoch', True) else train_cfg.max_iters

    commands = {}
    if not args.collect:  # collecting must not rewrite the configs that the runs were trained from
        work_root.mkdir(parents=True, exist_ok=True)
        for point in grid:
            config_path = work_root / f'{point.name}.py'
            text = point_config(cfg, point, str(work_root / point.name)).pretty_text
            write_bytes_atomic(config_path, text.encode(), force=True)
            commands[point] = [sys.executable, str(TRAIN), str(config_path), '--resume']
    if args.dry_run:
        print(f'{len(grid)} configs in {work_root}; train each with:')
        print('\n'.join(' '.join(command) for command in commands.values()))
        return

    accuracies = {}
    for index, point in enumerate(grid, 1):
        accuracy = final_metric(work_root / point.name, args.metric, final_step)
        if accuracy is None and not args.collect:
            print_log(f'[{index}/{len(grid)}] training {point.name}', logger='current')
            if subprocess.run(commands[point]).returncode != 0:
                raise RuntimeError(f'{point.name}: tools/train.py failed; its log is in {work_root / point.name}')
            accuracy = final_metric(work_root / point.name, args.metric, final_step)
            if accuracy is None:
                raise RuntimeError(f'{point.name}: training finished without logging {args.metric!r} at '
                                   f'step {final_step}; is the metric name right? See {work_root / point.name}')
        accuracies[point] = accuracy
    unfinished = [point.name for point, accuracy in accuracies.items() if accuracy is None]
    if unfinished:
        raise RuntimeError(f'{len(unfinished)} of {len(grid)} points have no {args.metric!r} at step '
                           f'{final_step} in {work_root}: {", ".join(unfinished)}')

    stats = model_stats(cfg)
    dataset = name.rsplit('_', 1)[-1]  # model-zoo names end in _<dataset>
    results = [dict(arch=stats['arch'], method=stats['method'], dataset=dataset, lr=point.lr,
                    weight_decay=point.weight_decay, lr_mult=point.lr_mult, accuracy=accuracy,
                    params=stats['params'], flops=stats['flops'])
               for point, accuracy in accuracies.items()]
    best = max(results, key=lambda record: record['accuracy'])
    out = Path(args.out or work_root / 'hparam_grid.json')
    write_bytes_atomic(out, json.dumps(dict(results=results, best=best), indent=2).encode(), force=True)

    print(f'{"lr":>8} {"wd":>8} {"lr_mult":>8} {args.metric:>14}')
    for record in sorted(results, key=lambda record: -record['accuracy']):
        mult = '-' if record['lr_mult'] is None else f'{record["lr_mult"]:g}'
        print(f'{record["lr"]:>8g} {record["weight_decay"]:>8g} {mult:>8} {record["accuracy"]:>14.2f}')
    print(f'best: lr={best["lr"]:g} weight_decay={best["weight_decay"]:g} lr_mult={best["lr_mult"]} '
          f'-> {best["accuracy"]:.2f}; results in {out}')


if __name__ == '__main__':
    main()
