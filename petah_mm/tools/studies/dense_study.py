"""Train and evaluate the real dense tasks on two pretrained backbones, EfficientNet-Lite0 (frozen, PETAH-2, full
fine-tuning) and the DINOv2 ViT-S/14 behind a simple feature pyramid (the same, and attention fine-tuning): does PETAH
adapt a pretrained backbone to detection and segmentation? (docs/real_data.md)

    python tools/analysis_tools/dense_study.py --quick      # the tests' path: tiny data, a few iterations
    python tools/analysis_tools/dense_study.py              # the configs' own schedules on 256 / 64 images
    python tools/analysis_tools/dense_study.py --full       # 1,024 / 256 images, 4x the iterations

Every run is mmengine's Runner on a configs/real config (Cascade Mask R-CNN + FPN and Semantic FPN on the animal
silhouettes), with only the data root, the work directory and (``--quick``, ``--full``) the length of the
schedule changed. Each run trains without validation, then is evaluated once on the validation split (the set
has no other; no choice here looks at it). The PETAH-2 runs keep their final checkpoint, which
``tools/deployment/release_task.py`` releases.
Runs append to ``WORK_DIR/runs.jsonl``, so an interrupted study resumes where it stopped.

Output in WORK_DIR: ``dense_study.json`` (every run) and ``dense_study.md`` (bbox / segm mAP, mIoU, trainable
parameters, training time).
"""
import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config
from mmengine.runner import Runner

from petah_mm.datasets import make_animal_silhouettes
from petah_mm.tools.studies.study_cli import parse_study_args, results_stem, study_setup
from petah_mm.utils import machine, write_bytes_atomic

REPO = Path(__file__).resolve().parents[3]
#: task -> backbone -> its configs/real config, per method
TASKS = {
    'cascade-mask-rcnn': {
        'tf-efficientnet-lite0':
        'configs/real/cascade-mask-rcnn_tf-efficientnet-lite0-{method}_fpn_animal-silhouettes.py',
        'dinov2-vit-s14': 'configs/real/cascade-mask-rcnn_dinov2-vit-s14-{method}_simple-fpn_animal-silhouettes.py'},
    'semantic-fpn': {
        'tf-efficientnet-lite0': 'configs/real/fpn_tf-efficientnet-lite0-{method}_animal-silhouettes.py',
        'dinov2-vit-s14': 'configs/real/fpn_dinov2-vit-s14-{method}_simple-fpn_animal-silhouettes.py'},
}
#: backbone -> the methods run on it (attention fine-tuning needs attention)
METHODS = {'tf-efficientnet-lite0': ('frozen', 'petah2', 'full'),
           'dinov2-vit-s14': ('frozen', 'attn-ft', 'petah2', 'full')}
#: the method whose checkpoints are kept (the model zoo's released tasks)
KEPT = 'petah2'
#: the metrics of each task in the table, as the libraries' evaluators name them
METRICS = {'cascade-mask-rcnn': ('coco/bbox_mAP', 'coco/segm_mAP'), 'semantic-fpn': ('mIoU', )}


@dataclass(frozen=True)
class Profile:
    num_train: int
    num_val: int
    #: per task, the config settings (``train_cfg`` and ``param_scheduler``) that replace the config's schedule
    #: (None: the config's own)
    schedules: Optional[Dict[str, dict]] = None
    #: the factor on an iteration-based config's iterations and the ends of its schedulers (an epoch-based one
    #: grows with the images by itself)
    iterations_scale: int = 1
    #: backbone -> methods
    methods: Dict[str, Tuple[str, ...]] = field(default_factory=lambda: dict(METHODS))


PROFILES = {
    'quick': Profile(num_train=4, num_val=2, methods=dict.fromkeys(METHODS, (KEPT, )), schedules={
        'cascade-mask-rcnn': dict(train_cfg=dict(max_epochs=1), param_scheduler=[]),
        'semantic-fpn': dict(train_cfg=dict(max_iters=2), param_scheduler=[])}),
    # the silhouette set's default size and the configs' own schedules (Cascade: 12 epochs, what tools/main_job.py
    # trains; Semantic FPN: 1,600 iterations of 4; the ViT's configs half of each)
    'default': Profile(num_train=256, num_val=64),
    # 4x the images: the detector's epochs become 4x the iterations, the segmentor's are scaled to match
    'full': Profile(num_train=1024, num_val=256, iterations_scale=4),
}


def config_path(task: str, method: str, backbone: str = 'tf-efficientnet-lite0') -> Path:
    return REPO / TASKS[task][backbone].format(method=method)


def run_name(task: str, method: str, backbone: str) -> str:
    """``task_method`` for EfficientNet-Lite0 (the names of the first studies' runs, which a study resumes),
    ``task_backbone_method`` for the others."""
    return f'{task}_{method}' if backbone == 'tf-efficientnet-lite0' else f'{task}_{backbone}_{method}'


def run_config(task: str, method: str, profile: Profile, data_root: Path, work_dir: Path,
               backbone: str = 'tf-efficientnet-lite0') -> Config:
    """The configs/real config of this task, backbone and method, on ``data_root``, without validation while
    training."""
    cfg = Config.fromfile(str(config_path(task, method, backbone)))
    root = str(data_root).rstrip('/') + '/'
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    if 'ann_file' in cfg.test_evaluator:
        cfg.test_evaluator.ann_file = root + 'annotations/instances_val2017.json'
    if profile.schedules:
        schedule = profile.schedules[task]
        cfg.train_cfg.update(schedule['train_cfg'])
        if 'param_scheduler' in schedule:
            cfg.param_scheduler = schedule['param_scheduler']
    if 'max_iters' in cfg.train_cfg and profile.iterations_scale != 1:
        cfg.train_cfg.max_iters *= profile.iterations_scale
        cfg.param_scheduler = [dict(scheduler, end=scheduler['end'] * profile.iterations_scale)
                               for scheduler in cfg.param_scheduler]
    length = cfg.train_cfg.get('max_epochs', cfg.train_cfg.get('max_iters'))
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # each run is evaluated once, by the test below
    if method == KEPT:
        cfg.default_hooks.checkpoint.update(interval=length, max_keep_ckpts=1, save_last=True)
    else:
        cfg.default_hooks.checkpoint = None  # nothing of these runs is kept but their metrics
    cfg.default_hooks.pop('visualization', None)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = work_dir.name
    return cfg


def task_metrics(metrics: Dict[str, float], task: str) -> Dict[str, float]:
    """The table's metrics of one evaluation. mmdet's CocoMetric returns none when the detector predicted no box
    on any image (it logs "The testing results of the whole dataset is empty"): its AP is then 0, recorded as such
    with ``no_predictions``."""
    names = METRICS[task]
    if task == 'cascade-mask-rcnn' and not any(name in metrics for name in names):
        return dict(dict.fromkeys(names, 0.0), no_predictions=True)
    return {name: float(metrics[name]) for name in names}


def train_and_evaluate(cfg: Config, task: str) -> dict:
    """Train through the Runner, evaluate on the validation split; metrics, trainable parameters, minutes."""
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    train_min = (time.perf_counter() - start) / 60
    metrics = runner.test()
    model = runner.model
    result = dict(backbone_params=sum(model.backbone.trainable_by_group().values()),
                  trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                  train_min=round(train_min, 2), test_min=round((time.perf_counter() - start) / 60 - train_min, 2),
                  metrics=task_metrics(metrics, task))
    checkpoint = Path(cfg.work_dir) / 'last_checkpoint'
    if cfg.default_hooks.checkpoint is not None and checkpoint.exists():
        result['checkpoint'] = checkpoint.read_text().strip()
    return result


def run_study(profile: Profile, work_dir: Path) -> dict:
    data_root = work_dir / 'data' / 'animal_silhouettes'
    make_animal_silhouettes(data_root, num_train=profile.num_train, num_val=profile.num_val)
    log = work_dir / 'runs.jsonl'
    done = {}
    if log.exists():
        done = {record['name']: record for record in map(json.loads, log.read_text().splitlines())}
    for task, (backbone, methods) in itertools.product(TASKS, profile.methods.items()):
        for method in methods:
            name = run_name(task, method, backbone)
            if name in done:
                continue
            cfg = run_config(task, method, profile, data_root, work_dir / 'runs' / name, backbone)
            done[name] = dict(name=name, task=task, backbone=backbone, method=method,
                              config=str(config_path(task, method, backbone).relative_to(REPO)),
                              **train_and_evaluate(cfg, task))
            write_bytes_atomic(log, ''.join(json.dumps(r) + '\n' for r in done.values()).encode(), force=True)
    return dict(profile=asdict(profile), runs=list(done.values()))


def markdown(runs: List[dict]) -> str:
    lines = ['| task | backbone | method | bbox mAP | segm mAP | mIoU (%) | trainable backbone params '
             '| trainable params (with neck and heads) | train (min) |', '|---|---|---|---|---|---|---|---|---|']
    for run in runs:
        metrics = run['metrics']
        cells = [f'{metrics[name]:.3f}' if name in metrics else '–' for name in METRICS['cascade-mask-rcnn']]
        cells.append(f'{metrics["mIoU"]:.1f}' if 'mIoU' in metrics else '–')
        backbone = run.get('backbone', 'tf-efficientnet-lite0')  # the first studies' runs name none
        lines.append(f'| {run["task"]} | {backbone} | {run["method"]} | {" | ".join(cells)} | '
                     f'{run["backbone_params"]:,} | {run["trainable_params"]:,} | {run["train_min"]:.1f} |')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    args = parse_study_args(__doc__, "the tests' path: tiny data, a few iterations",
                            "1,024 / 256 images, 4x the iterations", 'work_dirs/dense_study', argv)
    profile, work_dir = study_setup(args, PROFILES)
    stem = results_stem(args, 'dense_study')
    start = time.perf_counter()
    results = run_study(profile, work_dir)
    results['wall_min'] = round((time.perf_counter() - start) / 60, 1)
    results['machine'] = machine.describe()  # of this invocation, as its wall time
    write_bytes_atomic(work_dir / f'{stem}.json', json.dumps(results, indent=2).encode(), force=True)
    table = markdown(results['runs']) + '\n' + machine.summary(results['machine']) + '\n'
    write_bytes_atomic(work_dir / f'{stem}.md', table.encode(), force=True)
    print(table)
    return results


if __name__ == '__main__':
    main()
