"""Several tasks in one process on one copy of the frozen backbone.

Every task model is built from its package, then its backbone's shared weights are replaced by
the very tensors of the first task's backbone, so they exist once in memory. Two ways to run a
task: ``routing`` leaves all adapters unmerged (no switch cost, each adapted layer builds its
W + ΔW in every forward), ``merge`` folds the active task's adapters into the shared kernels (a switch costs
one unmerge and one merge, inference costs what the plain backbone costs).

Calls are serialised: :meth:`MultiTaskModel.predict` holds one lock for the switch and the
inference, because the tasks share the very kernel tensors (a merge for one task changes them
for all) and the backbone keeps per-call state (the token grid of the attention bias). Several
threads may call ``predict``; they run one at a time. :meth:`select` hands out a model for
single-threaded use.
"""
import threading
from pathlib import Path
from typing import Dict, Union

import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope
from torch import nn

from ..adapters.io import read_tensor_file
from .packages import load_task_package

PathLike = Union[str, Path]
MODES = ('routing', 'merge')


def tie_shared_weights(target: nn.Module, source: nn.Module, names) -> None:
    """Make ``target``'s parameters and buffers ``names`` the same tensors as ``source``'s."""
    for name in names:
        owner, _, leaf = name.rpartition('.')
        target_owner, source_owner = target.get_submodule(owner), source.get_submodule(owner)
        store = '_parameters' if leaf in target_owner._parameters else '_buffers'
        getattr(target_owner, store)[leaf] = getattr(source_owner, store)[leaf]


class MultiTaskModel:

    def __init__(self, backbone_file: PathLike, packages: Dict[str, PathLike], mode: str = 'routing'):
        if mode not in MODES:
            raise ValueError(f'unknown multi-task mode {mode!r}; choose one of {MODES}')
        shared, _ = read_tensor_file(backbone_file, kind='backbone')
        self.mode, self.active = mode, None
        self.lock = threading.RLock()
        self.models: Dict[str, nn.Module] = {}
        for name, package in packages.items():
            model = load_task_package(package, shared)
            if self.models:
                tie_shared_weights(model.backbone, next(iter(self.models.values())).backbone, shared)
            self.models[name] = model

    def select(self, task: str) -> nn.Module:
        """The task's model, with its adapters merged into the shared kernels in ``merge`` mode."""
        if task not in self.models:
            raise KeyError(f'unknown task {task!r}; loaded tasks: {sorted(self.models)}')
        with self.lock:
            if self.mode == 'merge' and self.active != task:
                if self.active is not None:
                    self.models[self.active].backbone.unmerge_adapters()
                    self.active = None
                self.models[task].backbone.merge_adapters()
                self.active = task
            return self.models[task]

    def predict(self, task: str, image_path: PathLike):
        """Thread-safe: the switch and the inference run under one lock."""
        with self.lock:
            return predict(self.select(task), image_path)


@torch.no_grad()
def predict(model: nn.Module, image_path: PathLike):
    """One image through the task's own test pipeline (annotations dropped); returns its data sample."""
    cfg = model.cfg
    steps = [t for t in cfg.test_dataloader.dataset.pipeline if 'Annotations' not in t['type']]
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        batch = pseudo_collate([Compose(steps)(dict(img_path=str(image_path), img_id=0))])
        return model.test_step(batch)[0]
