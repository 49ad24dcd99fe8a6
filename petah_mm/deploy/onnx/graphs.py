"""What each task's graph computes: the network from the normalised image tensor to named outputs.

Classification and segmentation are exported with plain ``torch.onnx.export`` from these small
wrappers; detection goes through mmdeploy (:mod:`.detection`), whose rewriters add the end2end
post-processing (NMS) that a plain export cannot trace.
"""
from typing import Tuple

import torch
from mmengine.config import Config
from torch import nn

#: the config's ``default_scope`` -> task kind
TASKS = {'mmpretrain': 'classification', 'mmseg': 'segmentation', 'mmdet': 'detection'}
INPUT_NAME = 'input'  # mmdeploy's name for the normalised image tensor
OUTPUT_NAMES = {'classification': ('logits',), 'segmentation': ('seg_logits',)}


def task_of(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'default_scope {scope!r} of {cfg.filename}: ONNX export knows the tasks of '
                         f'{sorted(TASKS)} (classification, segmentation, detection)')
    return TASKS[scope]


class ClassifierGraph(nn.Module):
    """mmpretrain ``ImageClassifier``: image tensor -> class logits (before softmax), (N, num_classes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.extract_feat(inputs))


class SegmentorGraph(nn.Module):
    """mmseg ``EncoderDecoder``: image tensor -> per-pixel class logits at the input size, (N, C, H, W)."""

    def __init__(self, model: nn.Module, shape: Tuple[int, int]):
        super().__init__()
        self.model, self.shape = model, tuple(shape)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # the decode head reads only the first image's meta: the size its logits are resized to
        return self.model.encode_decode(inputs, [dict(img_shape=self.shape, pad_shape=self.shape)])


def task_graph(model: nn.Module, task: str, shape: Tuple[int, int]) -> nn.Module:
    if task == 'classification':
        return ClassifierGraph(model).eval()
    if task == 'segmentation':
        return SegmentorGraph(model, shape).eval()
    raise ValueError(f'no plain-export graph for {task!r}; detection is exported through mmdeploy')
