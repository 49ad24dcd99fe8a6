"""Task packages: what one task adds to a shared backbone, and the shared backbone itself.

A package is a directory with three files:

* ``adapter.safetensors``: the backbone's task tensors (adapter factors, or the weights the
  method trains), checked against the shared weights' fingerprint when loaded;
* ``task.safetensors``: everything else the task owns (neck, heads, the backbone's output
  norms);
* ``config.json``: the task's config as JSON data, whose backbone loads no weights itself (no
  ``init_cfg``, no ``pretrained`` download: :func:`petah_mm.models.without_pretrained`).

The shared backbone is one ``backbone.safetensors`` for all tasks. A package is pure data:
nothing is unpickled, and the config is parsed with ``json``, never executed like a ``.py``
config. Every ``type`` it names must be a module registered in mmengine's registries (mmengine
would otherwise import any dotted path, e.g. ``os.system``). Each file records the package's
random task id, so a file copied in from another package is refused.
"""
import json
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import mmengine.registry
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope, Registry
from mmengine.runner import load_checkpoint
from torch import nn

from ..adapters.io import (AdapterFileError, check_task_id, check_tensors, fingerprint, read_tensor_file,
                           write_tensor_file)
from ..models import without_pretrained
from ..utils import atomic_write
from ..utils.fileio import default_mode

CONFIG_FILE = 'config.json'
#: the libraries a task package may come from (its ``default_scope``)
LIBRARY_SCOPES = ('mmengine', 'mmdet', 'mmseg', 'mmpretrain')
#: ``type`` values the libraries read without a registry: mmdet's ``getattr(mmcv.ops, type)`` RoI layers, and
#: mmcv's ``batched_nms``, which ``eval``s its type, so only these exact strings are accepted
NON_REGISTRY_TYPES = ('nms', 'soft_nms', 'RoIAlign', 'RoIPool')

PathLike = Union[str, Path]


def shared_backbone_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return model.backbone.shared_state_dict()


def task_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every tensor of the task model that is neither shared backbone weight nor adapter."""
    backbone = model.backbone
    not_task = {f'backbone.{k}' for k in (*backbone.shared_state_dict(), *backbone.task_state_dict())}
    return {k: v for k, v in model.state_dict().items() if k not in not_task}


def export_shared_backbone(model: nn.Module, path: PathLike, force: bool = False) -> int:
    """The frozen weights that every task on this backbone shares, stored once."""
    state = shared_backbone_state(model)
    meta = dict(arch=model.backbone.arch_name, frozen_fingerprint=fingerprint(state.items()))
    return write_tensor_file(path, state, meta, kind='backbone', force=force)


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
    task_id = uuid.uuid4().hex
    try:
        sizes = dict(adapter=model.backbone.save_adapter(staging / 'adapter.safetensors', task_id=task_id),
                     task=write_tensor_file(staging / 'task.safetensors', task_state(model),
                                            dict(default_scope=cfg.default_scope, dataset_meta=dataset_meta,
                                                 task_id=task_id), kind='task'))
        task_cfg = cfg.to_dict()
        task_cfg['model']['backbone'] = without_pretrained(task_cfg['model']['backbone'])
        task_cfg['load_from'] = None
        with atomic_write(staging / CONFIG_FILE, 'w') as f:
            f.write(json.dumps(dict(task_id=task_id, config=to_json_data(task_cfg)), indent=1))
        sizes['config'] = (staging / CONFIG_FILE).stat().st_size
        staging.chmod(default_mode(directory=True))
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sizes


def to_json_data(node, key='config'):
    """A config as JSON data; tuples (image scales) are kept as ``{"__tuple__": [...]}``."""
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise TypeError(f'{key}: config keys must be strings to be stored as JSON')
        return {k: to_json_data(v, f'{key}.{k}') for k, v in node.items()}
    if isinstance(node, tuple):
        return {'__tuple__': [to_json_data(v, f'{key}[{i}]') for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [to_json_data(v, f'{key}[{i}]') for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f'{key}: a {type(node).__name__} cannot be stored in a task package config (JSON data only); '
                    'write it as a registered type name instead')


def from_json_object(node: dict):
    return tuple(node['__tuple__']) if set(node) == {'__tuple__'} else node


def read_package_config(package: PathLike) -> tuple:
    """``(task id, Config)`` from a package's ``config.json``; parsing JSON never runs code."""
    path = Path(package) / CONFIG_FILE
    if not path.is_file():
        legacy = ' (it has a config.py: an older, code-executing package format; export it again)' if (
            Path(package) / 'config.py').exists() else ''
        raise AdapterFileError(f'{package}: no {CONFIG_FILE}, not a task package{legacy}')
    try:
        data = json.loads(path.read_text(), object_hook=from_json_object)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterFileError(f'{path}: not valid JSON ({e}); a package config is JSON data, export the '
                               'package again') from e
    if not (isinstance(data, dict) and isinstance(data.get('task_id'), str) and isinstance(data.get('config'), dict)):
        raise AdapterFileError(f'{path}: expected {{"task_id": str, "config": {{...}}}}, got '
                               f'{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else []}')
    cfg = Config(data['config'])
    if cfg.get('default_scope') not in LIBRARY_SCOPES[1:]:
        raise AdapterFileError(f'{path}: default_scope={cfg.get("default_scope")!r}; a task package belongs to one '
                               f'of {LIBRARY_SCOPES[1:]}')
    check_registered_types(cfg.to_dict(), path, cfg.default_scope)
    return data['task_id'], cfg


@contextmanager
def registry_import_fallback_disabled():
    """mmengine's ``Registry.get`` imports any dotted name it does not know; switch that off."""
    module = mmengine.registry.registry
    original = module.get_object_from_string
    module.get_object_from_string = lambda name: None
    try:
        yield
    finally:
        module.get_object_from_string = original


def is_registered(name: str, scope: str) -> bool:
    """Whether a build in ``scope`` finds ``name`` in a registry, importing nothing named by the package.

    A scope prefix (``mmpretrain.EfficientFormer``) must be a library's: mmengine imports
    ``<prefix>.registry`` for any other, and its fallback imports any dotted path.
    """
    if '.' in name and name.split('.')[0] not in LIBRARY_SCOPES:
        return False
    import_module(f'{scope}.registry')  # creates the library's child registries
    with registry_import_fallback_disabled():
        for root in (r for r in vars(mmengine.registry).values() if isinstance(r, Registry)):
            if root._children.get(scope, root).get(name) is not None:  # the registry a build in scope uses
                return True
    return False


def check_registered_types(node, path, scope, key='config') -> None:
    """Every ``type`` in the config is a string naming a registered module, or the package is refused."""
    if isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_registered_types(value, path, scope, f'{key}[{i}]')
        return
    if not isinstance(node, dict):
        return
    if 'type' in node:
        name = node['type']
        if not (name in NON_REGISTRY_TYPES or isinstance(name, str) and is_registered(name, scope)):
            raise AdapterFileError(f'{path}: {key}.type={name!r} is not a registered module name; a task package '
                                   'may only name registered types (it is data, not code)')
    for k, value in node.items():
        check_registered_types(value, path, scope, f'{key}.{k}')


def build_task_model(config: Union[Config, PathLike]) -> nn.Module:
    """Build a model in its library's scope, without loading any weights.

    ``config`` is a :class:`Config` or the path of a trusted ``.py`` config (a package's config is
    read with :func:`read_package_config` instead).
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model_cfg = dict(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # a top-level one (mmpretrain's configs), as mmengine's Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(model_cfg)
    model.cfg = cfg  # the libraries' inference APIs read the test pipeline from here
    return model.eval()


def build_trained_model(config: PathLike, checkpoint: PathLike) -> Tuple[Config, nn.Module, dict]:
    """``(config, model, checkpoint)`` of a trained model, for the export tools: every weight comes from
    ``checkpoint`` (strict), so the config's backbone is built without its pretrained weights, and
    without any download (:func:`petah_mm.models.without_pretrained`)."""
    cfg = Config.fromfile(config)
    cfg.model.backbone = without_pretrained(cfg.model.backbone)
    model = build_task_model(cfg)
    return cfg, model, load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)


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
    task_id, cfg = read_package_config(package)
    tensors, meta = read_tensor_file(package / 'task.safetensors', kind='task')
    check_task_id(package / 'task.safetensors', meta, task_id)
    model = build_task_model(cfg)
    load_shared_backbone(model, shared)
    model.backbone.load_adapter(package / 'adapter.safetensors', task_id=task_id)
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
