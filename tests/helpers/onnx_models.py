"""Trained-like task checkpoints for the ONNX tests, without training: the toy config's model with its
pretrained toy backbone and seeded random adapters (a fresh adapter is the identity and would hide a wrong
merge), saved as a checkpoint ``tools/deployment/export_onnx.py`` accepts."""
from pathlib import Path
from typing import Tuple

import torch
from mmengine.config import Config

from petah_mm.deploy.packages import build_task_model
from petah_mm.testing import randomise_adapters
from . import CLS_TOY, DET_TOY, SEG_TOY

BASES = dict(cls=CLS_TOY, seg=SEG_TOY, det=DET_TOY)
#: the detector keeps every box (score_thr 0), so that --verify compares many, at RoI budgets a CPU test affords
DET_TEST_CFG = ("model = dict(test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=40), "
                "rcnn=dict(score_thr=0.0, max_per_img=12)))\n")


def random_task_checkpoint(toy_config, task: str, root: Path, seed: int = 0) -> Tuple[Path, Path]:
    """``(config, checkpoint)`` of the toy ``task`` (cls, seg, det) with random adapters of ``seed``."""
    config = toy_config(BASES[task], root / f'{task}_toy.py')
    if task == 'det':
        (root / 'det_toy_all_boxes.py').write_text(f'_base_ = {str(config)!r}\n' + DET_TEST_CFG)
        config = root / 'det_toy_all_boxes.py'
    model = build_task_model(Config.fromfile(config))
    model.init_weights()
    randomise_adapters(model, seed=seed)
    checkpoint = root / f'{task}_seed{seed}.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    return config, checkpoint
