"""The main job: train Cascade Mask R-CNN + FPN with a PETAH-2 adapter on CPU, on data it generates.

By default it adapts the real ImageNet-pretrained EfficientNet-Lite0 (the installed weights, docs/real_data.md) to
the real animal silhouettes: PETAH's setting, a pretrained backbone, and the only pretrained weights reachable
here. ``--config`` with the toy config trains the same detector on a seeded random EfficientFormer-L1 and toy
shapes (the pipeline check this job ran before real weights were available).

It generates the config's dataset if missing (the animal silhouettes, or the toy COCO set and its seeded random
EfficientFormer-L1 backbone), trains (resuming if interrupted, skipping if the final checkpoint exists),
evaluates COCO bbox and segm mAP, and writes a picture of the predictions.
Everything lands in --work-dir: the checkpoint, ``metrics.json`` and ``predictions.png``.
Training is seeded and uses deterministic algorithms only, so a second run on the same machine
gives the same metrics.

    .venv/bin/python tools/main_job.py [--work-dir work_dirs/main_job] [--seed 0] [--cfg-options ...]
    .venv/bin/python tools/main_job.py --work-dir work_dirs/main_job_toy \
        --config configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py
"""
import argparse
import json
import time
from pathlib import Path

import mmcv
import numpy as np
from mmdet.apis import inference_detector, init_detector
from mmdet.visualization import DetLocalVisualizer
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from petah_mm.datasets import make_animal_silhouettes, make_toy_backbone, make_toy_coco
from petah_mm.utils.fileio import write_bytes_atomic

CONFIG = 'configs/real/cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py'
TOY_CONFIG = 'configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py'
#: the generator of each dataset a main-job config may train on, by the name of the config's data root
DATASETS = {'animal_silhouettes': make_animal_silhouettes, 'toy_coco': make_toy_coco}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=CONFIG, help='a COCO instance segmentation config on one of the '
                        f'generated sets ({", ".join(DATASETS)}); the EfficientFormer-L1 toy run: {TOY_CONFIG}')
    parser.add_argument('--work-dir', default='work_dirs/main_job', help='checkpoint, metrics and picture go here')
    parser.add_argument('--data-root', help='where the config\'s dataset is (generated when missing); default: '
                        'the config\'s data root')
    parser.add_argument('--score-thr', type=float, default=0.3, help='lowest score drawn in the picture')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the training run')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def dataset_generator(cfg: Config):
    """The generator of the config's dataset, known by the name of its data root."""
    name = Path(cfg.train_dataloader.dataset.data_root).name
    if name not in DATASETS:
        raise ValueError(f'the config trains on {cfg.train_dataloader.dataset.data_root!r}; the main job generates '
                         f'only the data roots named {sorted(DATASETS)}: pass a config on one of them')
    return DATASETS[name]


def load_config(args) -> tuple:
    """``(config, the generator of its dataset)``, the config on --data-root with the run's seed and work dir."""
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(dict(args.cfg_options or {}))
    generator = dataset_generator(cfg)
    data_root = (args.data_root or cfg.train_dataloader.dataset.data_root).rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = data_root + 'annotations/instances_val2017.json'
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed, deterministic=True)
    return cfg, generator


def train_and_evaluate(cfg: Config) -> tuple:
    """Train unless the final checkpoint exists, then evaluate it; returns (checkpoint, metrics)."""
    final = Path(cfg.work_dir) / f'epoch_{cfg.train_cfg.max_epochs}.pth'
    if final.exists():
        print(f'[main job] reusing the trained checkpoint {final}')
        cfg.load_from = str(final)
        return final, Runner.from_cfg(cfg).test()
    cfg.resume = True  # picks up the latest checkpoint of an interrupted run, if any
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # the evaluation below replaces it
    runner = Runner.from_cfg(cfg)
    runner.train()
    return final, runner.test()


def draw_predictions(cfg: Config, checkpoint: Path, out_file: Path, score_thr: float, count: int = 4) -> None:
    """Predictions on the first validation images, side by side in one picture."""
    model = init_detector(cfg, str(checkpoint), device='cpu')
    visualizer = DetLocalVisualizer.get_instance('petah_main_job')
    visualizer.dataset_meta = model.dataset_meta
    image_dir = Path(cfg.test_dataloader.dataset.data_root) / cfg.test_dataloader.dataset.data_prefix.img
    panels = []
    for path in sorted(image_dir.glob('*.jpg'))[:count]:
        image = mmcv.imread(str(path), channel_order='rgb')
        visualizer.add_datasample(path.name, image, inference_detector(model, str(path)), draw_gt=False,
                                  pred_score_thr=score_thr, show=False)
        panels.append(visualizer.get_image())
    picture = np.concatenate(panels, axis=1)[..., ::-1]
    mmcv.imwrite(mmcv.imrescale(picture, 2, interpolation='nearest'), str(out_file))  # the generated images are small


def make_inputs(cfg: Config, generator) -> dict:
    """Generate the config's dataset and, for the toy configs, their seeded random backbone, when missing."""
    info = generator(cfg.train_dataloader.dataset.data_root)
    checkpoint = (cfg.model.backbone.get('init_cfg') or {}).get('checkpoint')
    if checkpoint and Path(checkpoint).parent.name == 'toy_backbone':
        make_toy_backbone(checkpoint)
    return info


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.time()
    cfg, generator = load_config(args)
    info = make_inputs(cfg, generator)
    print(f'[main job] data in {info["root"]} ({info["num_train_images"]} train / '
          f'{info["num_val_images"]} val images)')
    checkpoint, metrics = train_and_evaluate(cfg)
    work_dir = Path(cfg.work_dir)
    write_bytes_atomic(work_dir / 'metrics.json', json.dumps(metrics, indent=2).encode(), force=True)
    draw_predictions(cfg, checkpoint, work_dir / 'predictions.png', args.score_thr)
    print(f'[main job] done in {(time.time() - start) / 60:.1f} min')
    print(f'[main job] bbox mAP {metrics["coco/bbox_mAP"]:.3f}, segm mAP {metrics["coco/segm_mAP"]:.3f} '
          f'(all metrics: {work_dir / "metrics.json"})')
    print(f'[main job] checkpoint {checkpoint}, picture {work_dir / "predictions.png"}')
    return metrics


if __name__ == '__main__':
    main()
