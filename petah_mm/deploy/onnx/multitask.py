"""Many tasks on one copy of the backbone in ONNX Runtime: the device form of ``MultiTaskModel``.

Merged graphs cannot share their backbone (each task's kernels are W + ΔW of its own), so the
shared form keeps the adapters unmerged: one backbone graph holds the frozen weights once, as
initializers, and takes every task-owned backbone tensor (adapter factors, output norms) as a
graph input, fed per task (the frozen BatchNorm after each adapted convolution is folded into it and
into the task's fed factor, :mod:`.fold_norms`); each task adds a small head graph from the backbone's features. One
backbone session serves every task: switching a task is choosing which tensors to feed.

All tasks run at one input size (H, W), the backbone graph's: EfficientFormer fixes its attention
bias for the export size. A task whose own pipeline gives a smaller image is zero-padded to it.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from .exported import OPSET, PathLike, merged
from .fold_norms import fold_norms, scaled_feeds
from .graphs import INPUT_NAME, task_of
from .position_grid import fixed_position_grid
from .runtime import cpu_session, release_free_memory


def task_tensor_names(backbone: nn.Module) -> List[str]:
    """The backbone tensors that differ between tasks: adapter factors and the task-owned output norms."""
    owned = tuple(backbone.task_owned_prefixes)
    return sorted({*backbone.task_state_dict(), *(k for k in backbone.state_dict() if k.startswith(owned))})


class BackboneWithTaskInputs(nn.Module):
    """``backbone(image)`` with ``names`` taken from the inputs after the image instead of its own tensors."""

    def __init__(self, backbone: nn.Module, names: List[str]):
        super().__init__()
        self.backbone, self.names = backbone, names

    def forward(self, image: torch.Tensor, *tensors: torch.Tensor):
        # torch.func.functional_call refuses to run under the TorchScript tracer, so the tensors are swapped in
        # by hand, and the module's own put back afterwards
        slots = []
        for name, tensor in zip(self.names, tensors):
            owner, _, leaf = name.rpartition('.')
            module = self.backbone.get_submodule(owner)
            store = module._parameters if leaf in module._parameters else module._buffers
            slots.append((store, leaf, store[leaf]))
            store[leaf] = tensor
        try:
            return tuple(self.backbone(image))
        finally:
            for store, leaf, original in slots:
                store[leaf] = original


class HeadGraph(nn.Module):
    """A task model after its backbone: features -> class logits or per-pixel logits at ``shape``."""

    def __init__(self, model: nn.Module, task: str, shape: Tuple[int, int]):
        super().__init__()
        if task not in ('classification', 'segmentation'):
            raise ValueError(f'the ONNX Runtime multi-task form serves classification and segmentation tasks, '
                             f'not {task}: export a detector on its own with tools/deployment/export_onnx.py')
        self.model, self.task, self.shape = model, task, tuple(shape)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        x = self.model.neck(features) if getattr(self.model, 'with_neck', False) else features
        if self.task == 'classification':
            return self.model.head(x)
        return self.model.decode_head.predict(x, [dict(img_shape=self.shape, pad_shape=self.shape)],
                                              self.model.test_cfg)


def export_graph(module: nn.Module, args: tuple, path: Path, input_names: List[str],
                 output_names: List[str]) -> Path:
    # in eval mode before the export: torch.onnx.export restores the wrapper's mode afterwards, and a new
    # wrapper's default (training) would switch the wrapped task model to training mode
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names, do_constant_folding=True)
    return path


@dataclass
class MultiTaskGraphs:
    """The files of the shared form: one backbone graph, a head graph and the backbone feeds per task."""
    backbone: Path
    heads: Dict[str, Path]
    feeds: Dict[str, Dict[str, np.ndarray]]
    shape: Tuple[int, int]
    feature_names: List[str] = field(default_factory=list)


@torch.no_grad()
def export_multitask(models: Dict[str, nn.Module], configs: Dict[str, Config], shape: Tuple[int, int],
                     out_dir: PathLike) -> MultiTaskGraphs:
    """Export ``models`` (tasks on one frozen backbone) as one backbone graph plus a head graph per task."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(models.values())).eval()
    names = task_tensor_names(first.backbone)
    image = torch.zeros(1, 3, *shape)
    folded, scales = fold_norms(first.backbone, image, names)
    own = list(scaled_feeds(first.backbone.state_dict(), names, scales).values())
    features = first.backbone(image)
    feature_names = [f'feat{i}' for i in range(len(features))]
    with fixed_position_grid(folded, shape):
        backbone = export_graph(BackboneWithTaskInputs(folded, names), (image, *own), out_dir / 'backbone.onnx',
                                [INPUT_NAME, *names], feature_names)
    heads, feeds = {}, {}
    for task, model in models.items():
        model.eval()
        if task_tensor_names(model.backbone) != names:
            raise ValueError(f'task {task!r} adapts other backbone tensors than {next(iter(models))!r}; the shared '
                             'backbone graph needs every task to have the same adapter layout')
        heads[task] = export_graph(HeadGraph(model, task_of(configs[task]), shape), tuple(features),
                                   out_dir / f'{task}.head.onnx', feature_names, ['logits'])
        feeds[task] = {n: t.numpy() for n, t in scaled_feeds(model.backbone.state_dict(), names, scales).items()}
    return MultiTaskGraphs(backbone, heads, feeds, tuple(shape), feature_names)


@torch.no_grad()
def export_merged_task(model: nn.Module, cfg: Config, shape: Tuple[int, int], path: PathLike) -> Path:
    """One task as a merged stand-alone graph (backbone and head): what the shared form is measured against."""
    model.eval()
    image = torch.zeros(1, 3, *shape)
    with merged(model), fixed_position_grid(model, shape):
        head = HeadGraph(model, task_of(cfg), shape)
        return export_graph(nn.Sequential(model.backbone, _Splat(head)), (image, ), Path(path), [INPUT_NAME],
                            ['logits'])


class _Splat(nn.Module):
    """Calls ``head(*features)`` on the tuple the backbone returns."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features):
        return self.head(*features)


class OnnxMultiTask:
    """One backbone session for every task, plus each task's head session.

    ``low_memory`` (the default) opens the sessions without ORT's CPU memory arena (each session would keep
    its peak activations) and gives the heap that loading freed back to the OS. Three toy tasks: 109 MB
    resident instead of 315 MB (docs/deployment.md). Between requests, :func:`.runtime.release_free_memory`
    returns the last run's freed activations too; glibc keeps them for the next run otherwise."""

    def __init__(self, graphs: MultiTaskGraphs, threads: int = None, low_memory: bool = True):
        self.graphs = graphs
        self.backbone = cpu_session(graphs.backbone, threads, arena=not low_memory)
        self.heads = {task: cpu_session(path, threads, arena=not low_memory) for task, path in graphs.heads.items()}
        if low_memory:
            release_free_memory()

    def run(self, task: str, image: np.ndarray) -> np.ndarray:
        if task not in self.heads:
            raise KeyError(f'unknown task {task!r}; loaded tasks: {sorted(self.heads)}')
        features = self.backbone.run(None, {INPUT_NAME: image, **self.graphs.feeds[task]})
        return self.heads[task].run(None, dict(zip(self.graphs.feature_names, features)))[0]
