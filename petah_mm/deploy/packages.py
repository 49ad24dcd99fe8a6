"""Task packages: what one task adds to a shared backbone, and the shared backbone itself.

A package is a directory with three files:

* ``adapter.safetensors``: the backbone's task tensors (adapter factors, or the weights the
  method trains), checked against the shared weights' fingerprint when loaded;
* ``task.safetensors``: everything else the task owns (neck, heads, the backbone's output
  norms);
* ``config.py``: the task's config, whose backbone no longer loads pretrained weights itself.

The shared backbone is one ``backbone.safetensors`` for all tasks. Nothing is pickled.
"""
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch import nn

from ..adapters.io import check_tensors, fingerprint, read_tensor_file, write_tensor_file

PathLike = Union[str, Path]


def shared_backbone_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return model.backbone.shared_state_dict()


def task_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every tensor of the task model that is neither shared backbone weight nor adapter."""
    backbone = model.backbone
    not_task = {f'backbone.{k}' for k in (*backbone.shared_state_dict(), *backbone.task_state_dict())}
    return {k: v for k, v in model.state_dict().items() if k not in not_task}


def export_shared_backbone(model: nn.Module, path: PathLike) -> int:
    """The frozen weights that every task on this backbone shares, stored once."""
    state = shared_backbone_state(model)
    meta = dict(arch=model.backbone.arch_name, frozen_fingerprint=fingerprint(state.items()))
    return write_tensor_file(path, state, meta, kind='backbone')


def export_task_package(model: nn.Module, cfg: Config, out_dir: PathLike,
                        dataset_meta: Optional[dict] = None) -> Dict[str, int]:
    """Write a package for a trained task model; returns each file's size in bytes.

    The package is assembled in a temporary sibling directory and renamed into place, so an
    interrupted export never leaves a package that looks complete.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f'{out_dir} exists; remove it or choose another package directory')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f'.{out_dir.name}.'))
    try:
        sizes = dict(adapter=model.backbone.save_adapter(staging / 'adapter.safetensors'),
                     task=write_tensor_file(staging / 'task.safetensors', task_state(model),
                                            dict(default_scope=cfg.default_scope, dataset_meta=dataset_meta),
                                            kind='task'))
        task_cfg = Config(cfg.to_dict())
        task_cfg.model.backbone.init_cfg = None
        task_cfg.load_from = None
        task_cfg.dump(staging / 'config.py')
        sizes['config'] = (staging / 'config.py').stat().st_size
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sizes


def build_task_model(config: Union[Config, PathLike]) -> nn.Module:
    """Build a model in its library's scope, without loading any weights."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.cfg = cfg  # the libraries' inference APIs read the test pipeline from here
    return model.eval()


@torch.no_grad()
def load_shared_backbone(model: nn.Module, shared: Union[PathLike, Dict[str, torch.Tensor]]) -> None:
    from_file = isinstance(shared, (str, Path))
    state = read_tensor_file(shared, kind='backbone')[0] if from_file else shared
    check_tensors(shared if from_file else 'the shared backbone weights', state, model.backbone.shared_state_dict())
    model.backbone.load_state_dict(state, strict=False)


@torch.no_grad()
def load_task_package(package: PathLike, shared: Union[PathLike, Dict[str, torch.Tensor]]) -> nn.Module:
    """A task model from its package and the shared backbone weights, ready for inference."""
    package = Path(package)
    model = build_task_model(package / 'config.py')
    load_shared_backbone(model, shared)
    model.backbone.load_adapter(package / 'adapter.safetensors')
    tensors, meta = read_tensor_file(package / 'task.safetensors', kind='task')
    own = task_state(model)
    check_tensors(package / 'task.safetensors', tensors, own)
    for name, tensor in tensors.items():
        own[name].copy_(tensor)
    model.dataset_meta = restore_tuples(meta.get('dataset_meta'))
    return model


def restore_tuples(value):
    """JSON turned the dataset meta's tuples (palette colours) into lists; visualizers want tuples."""
    if isinstance(value, dict):
        return {k: restore_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tuple(v) if isinstance(v, list) else restore_tuples(v) for v in value]
    return value
