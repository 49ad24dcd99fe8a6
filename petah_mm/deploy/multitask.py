"""Several tasks in one process on one copy of the frozen backbone.

Every task model is built from its package, then its backbone's shared weights are replaced by
the very tensors of the first task's backbone, so they exist once in memory. Two ways to run a
task: ``routing`` leaves all adapters unmerged (no switch cost, each adapted layer adds its ΔW in every
forward, as W + ΔW or as the thin form; :meth:`MultiTaskModel.tune_forms` measures which is faster per layer
on this CPU), ``merge`` folds the active task's adapters into the shared kernels (a switch costs one unmerge
and one merge, inference costs what the plain backbone costs).

A switch is all or nothing: if the new task's adapters cannot be merged, the previous task is
merged again and stays active (:meth:`MultiTaskModel.select`), so the other tasks predict exactly
what they predicted before. A package whose merged kernels would not be finite, or whose outputs on a
probe image are not (:func:`petah_mm.deploy.packages.probe_task`), is refused when it is loaded, in
both modes; a prediction that holds NaN or Inf raises :class:`NonFiniteOutputError` instead of
serving it.

Calls are serialised: :meth:`MultiTaskModel.predict` holds one lock for the switch and the
inference, because the tasks share the very kernel tensors (a merge for one task changes them
for all) and the backbone keeps per-call state (the token grid of the attention bias). Several
threads may call ``predict``; they run one at a time. mmengine's default scope is process-wide,
so everything that depends on it (building models and pipelines, inference) also holds
:data:`SCOPE_LOCK`, one lock for the whole process: two ``MultiTaskModel`` s of different
libraries can serve from threads at once. :meth:`select` hands out a model for single-threaded use.
"""
import threading
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from torch import nn

from ..adapters.form_choice import tune_unmerged_forms
from ..adapters.io import read_tensor_file
from .packages import check_finite, load_task_package
from .pipeline import ImagePipeline

PathLike = Union[str, Path]
MODES = ('routing', 'merge')
#: held around everything that reads mmengine's process-wide default scope, by every instance
SCOPE_LOCK = threading.RLock()


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
        self.pipelines: Dict[str, ImagePipeline] = {}
        with SCOPE_LOCK:
            for name, package in packages.items():
                model = load_task_package(package, shared)
                if self.models:
                    tie_shared_weights(model.backbone, next(iter(self.models.values())).backbone, shared)
                self.models[name], self.pipelines[name] = model, ImagePipeline(model.cfg)

    def select(self, task: str) -> nn.Module:
        """The task's model, with its adapters merged into the shared kernels in ``merge`` mode.

        All or nothing: if merging ``task`` fails, the previously active task is merged again and
        stays :attr:`active` (its kernels are recomputed from the same tensors, bit for bit), and
        the error is raised. Should even that fail, the backbone is left exactly unmerged and
        ``active`` is None."""
        if task not in self.models:
            raise KeyError(f'unknown task {task!r}; loaded tasks: {sorted(self.models)}')
        with self.lock:
            if self.mode == 'merge' and self.active != task:
                self._switch(task)
            return self.models[task]

    def _switch(self, task: str) -> None:
        previous = self.active
        if previous is not None:
            self.models[previous].backbone.unmerge_adapters()
            self.active = None
        try:
            self.models[task].backbone.merge_adapters()  # merges all of it or none
        except BaseException:
            if previous is not None:
                self.models[previous].backbone.merge_adapters()
                self.active = previous
            raise
        self.active = task

    def tune_forms(self, task: str, image_path: PathLike) -> dict:
        """Give ``task``'s unmerged LoRA layers the inference form measured fastest on this CPU for images like
        ``image_path`` (:func:`petah_mm.adapters.form_choice.tune_unmerged_forms`: a few seconds once per CPU, then
        the cache outside the checkout). What routing mode serves with; merged layers run the plain kernel anyway.
        Returns the measurement's summary."""
        with self.lock:
            model = self.select(task)
            with SCOPE_LOCK, DefaultScope.overwrite_default_scope(model.cfg.default_scope), torch.no_grad():
                inputs = model.data_preprocessor(pseudo_collate([self.pipelines[task](image_path)]), False)['inputs']
                return tune_unmerged_forms(model.backbone, inputs)

    def predict(self, task: str, image_path: PathLike):
        """Thread-safe: the switch and the inference run under one lock."""
        with self.lock:
            return predict(self.select(task), image_path, self.pipelines[task])


@torch.no_grad()
def predict(model: nn.Module, image_path: PathLike, pipeline: Optional[ImagePipeline] = None):
    """One image through the task's own test pipeline (annotations dropped); returns its data sample.

    An image that a resize step of the pipeline would shrink to nothing or grow without bound is refused,
    naming the step; a prediction holding NaN or Inf raises :class:`NonFiniteOutputError`."""
    with SCOPE_LOCK, DefaultScope.overwrite_default_scope(model.cfg.default_scope):
        pipeline = ImagePipeline(model.cfg) if pipeline is None else pipeline
        batch = pseudo_collate([pipeline(image_path)])
        sample = model.test_step(batch)[0]
    check_finite(sample, model)
    return sample
